const express = require('express');
const crypto = require('crypto');

const app = express();
app.use(express.json());

// Webhook secret from environment
const WEBHOOK_SECRET = process.env.CCTELEGRAM_WEBHOOK_SECRET;

// Middleware for signature verification
function verifySignature(req, res, next) {
  const signature = req.headers['x-cctelegram-signature'];
  const timestamp = req.headers['x-cctelegram-timestamp'];
  
  if (!signature || !timestamp) {
    return res.status(401).json({ error: 'Missing signature or timestamp' });
  }
  
  // Check timestamp (prevent replay attacks)
  const now = Math.floor(Date.now() / 1000);
  const requestTime = parseInt(timestamp);
  if (Math.abs(now - requestTime) > 300) { // 5 minute tolerance
    return res.status(401).json({ error: 'Request timestamp too old' });
  }
  
  // Verify signature
  const payload = JSON.stringify(req.body);
  const expectedSignature = crypto
    .createHmac('sha256', WEBHOOK_SECRET)
    .update(payload)
    .digest('hex');
    
  const actualSignature = signature.replace('sha256=', '');
  
  if (!crypto.timingSafeEqual(
    Buffer.from(expectedSignature, 'hex'),
    Buffer.from(actualSignature, 'hex')
  )) {
    return res.status(401).json({ error: 'Invalid signature' });
  }
  
  next();
}

// Event notification webhook
app.post('/webhook/events', verifySignature, (req, res) => {
  const { webhook_type, event } = req.body;
  
  console.log(`Received ${webhook_type} for event ${event.id}`);
  
  switch (event.status) {
    case 'delivered':
      console.log(`Event delivered to Telegram: ${event.title}`);
      break;
    case 'failed':
      console.error(`Event delivery failed: ${event.title}`);
      break;
    case 'pending':
      console.log(`Event pending delivery: ${event.title}`);
      break;
  }
  
  res.status(200).json({ status: 'received' });
});

// User response webhook
app.post('/webhook/responses', verifySignature, (req, res) => {
  const { webhook_type, response, original_event } = req.body;
  
  console.log(`User response received for ${original_event.type}`);
  
  // Handle approval responses
  if (original_event.type === 'approval_request') {
    const approved = response.message.text.toLowerCase().includes('approve');
    
    if (approved) {
      console.log(`Approval granted for: ${original_event.title}`);
      // Execute approved action
      executeApprovedAction(original_event, response);
    } else {
      console.log(`Approval denied for: ${original_event.title}`);
    }
  }
  
  res.status(200).json({ status: 'processed' });
});

// Bridge health webhook
app.post('/webhook/health', verifySignature, (req, res) => {
  const { webhook_type, health, alert_type } = req.body;
  
  if (alert_type) {
    console.log(`Bridge health alert: ${alert_type}`);
    
    // Handle critical health issues
    if (health.status === 'unhealthy') {
      console.error('Bridge unhealthy - triggering alert');
      // Send alert to monitoring system
      sendHealthAlert(health);
    }
  }
  
  res.status(200).json({ status: 'received' });
});

app.listen(3000, () => {
  console.log('Webhook server running on port 3000');
});
