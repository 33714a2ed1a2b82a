from flask import Flask, request, jsonify
import hmac
import hashlib
import json
import time
import os

app = Flask(__name__)
WEBHOOK_SECRET = os.environ.get('CCTELEGRAM_WEBHOOK_SECRET')

def verify_signature(payload_body, signature_header, timestamp_header):
    if not signature_header or not timestamp_header:
        return False
    
    # Check timestamp (prevent replay attacks)
    try:
        request_timestamp = int(timestamp_header)
        if abs(time.time() - request_timestamp) > 300:  # 5 minute tolerance
            return False
    except ValueError:
        return False
    
    # Verify signature
    expected_signature = hmac.new(
        WEBHOOK_SECRET.encode('utf-8'),
        payload_body,
        hashlib.sha256
    ).hexdigest()
    
    actual_signature = signature_header.replace('sha256=', '')
    
    return hmac.compare_digest(expected_signature, actual_signature)

@app.route('/webhook/events', methods=['POST'])
def handle_events():
    signature = request.headers.get('X-CCTelegram-Signature')
    timestamp = request.headers.get('X-CCTelegram-Timestamp')
    
    if not verify_signature(request.data, signature, timestamp):
        return jsonify({'error': 'Invalid signature'}), 401
    
    webhook_data = request.json
    event = webhook_data.get('event', {})
    
    print(f"Event {event.get('id')} status: {event.get('status')}")
    
    # Process event based on status
    if event.get('status') == 'delivered':
        handle_delivered_event(event)
    elif event.get('status') == 'failed':
        handle_failed_event(event)
    
    return jsonify({'status': 'received'}), 200

@app.route('/webhook/responses', methods=['POST']) 
def handle_responses():
    signature = request.headers.get('X-CCTelegram-Signature')
    timestamp = request.headers.get('X-CCTelegram-Timestamp')
    
    if not verify_signature(request.data, signature, timestamp):
        return jsonify({'error': 'Invalid signature'}), 401
    
    webhook_data = request.json
    response = webhook_data.get('response', {})
    original_event = webhook_data.get('original_event', {})
    
    # Handle approval workflows
    if original_event.get('type') == 'approval_request':
        user_response = response.get('message', {}).get('text', '').lower()
        
        if 'approve' in user_response:
            print(f"Approval granted for: {original_event.get('title')}")
            execute_approved_action(original_event, response)
        else:
            print(f"Approval denied for: {original_event.get('title')}")
    
    return jsonify({'status': 'processed'}), 200

@app.route('/webhook/health', methods=['POST'])
def handle_health():
    signature = request.headers.get('X-CCTelegram-Signature')
    timestamp = request.headers.get('X-CCTelegram-Timestamp')
    
    if not verify_signature(request.data, signature, timestamp):
        return jsonify({'error': 'Invalid signature'}), 401
    
    webhook_data = request.json
    health = webhook_data.get('health', {})
    alert_type = webhook_data.get('alert_type')
    
    if alert_type:
        print(f"Health alert: {alert_type}")
        
        if health.get('status') == 'unhealthy':
            send_health_alert(health)
    
    return jsonify({'status': 'received'}), 200

def handle_delivered_event(event):
    # Log successful delivery
    print(f"Event delivered: {event.get('title')}")

def handle_failed_event(event):
    # Handle delivery failure
    print(f"Event delivery failed: {event.get('title')}")
    # Could implement retry logic here

def execute_approved_action(event, response):
    # Execute the approved action
    print(f"Executing approved action for: {event.get('title')}")
    # Implementation depends on the specific action

def send_health_alert(health):
    # Send alert to monitoring system
    print(f"Bridge health alert - Status: {health.get('status')}")

if __name__ == '__main__':
    app.run(host='0.0.0.0', port=3000, debug=True)
