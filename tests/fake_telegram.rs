//! Tests of the fake Telegram server itself, over real sockets on 127.0.0.1.

#[path = "support/telegram.rs"]
mod telegram;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use telegram::FakeTelegram;

const TOKEN: &str = "123456:ABC-def_ghi";
const CHAT: i64 = 42;
const DEADLINE: Duration = Duration::from_secs(10);

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    ureq::Agent::new_with_config(config)
}

fn method_url(tg: &FakeTelegram, method: &str) -> String {
    format!("{}/bot{TOKEN}/{method}", tg.url())
}

fn read(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body = resp.body_mut().read_to_string().expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_str(&body).expect("JSON body"),
    )
}

/// POSTs `params` as JSON with `agent`; returns (HTTP status, body).
fn post_with(agent: &ureq::Agent, url: &str, params: &Value) -> Result<(u16, Value), ureq::Error> {
    let resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(params.to_string())?;
    Ok(read(resp))
}

fn call(tg: &FakeTelegram, method: &str, params: Value) -> (u16, Value) {
    post_with(&agent(), &method_url(tg, method), &params).expect("transport")
}

fn send_html(tg: &FakeTelegram, text: &str) -> (u16, Value) {
    call(
        tg,
        "sendMessage",
        json!({"chat_id": CHAT, "text": text, "parse_mode": "HTML"}),
    )
}

fn assert_error(got: (u16, Value), status: u16, description_start: &str) {
    let (code, body) = got;
    assert_eq!(code, status, "{body}");
    assert_eq!(body["ok"], json!(false), "{body}");
    assert_eq!(body["error_code"], json!(status), "{body}");
    let description = body["description"].as_str().unwrap();
    assert!(
        description.starts_with(description_start),
        "{description:?} should start with {description_start:?}"
    );
}

#[test]
fn valid_html_is_accepted_with_decoded_visible_text() {
    let tg = FakeTelegram::start();
    let html = "<b>Build</b> &lt;ok&gt; &amp; &quot;done&quot; &#65;&#x1F600; <i>i</i><em>e</em><u>u</u><s>s</s> \
        <a href=\"https://example.com/?a=1&amp;b=2\">link</a> <span class=\"tg-spoiler\">x</span><tg-spoiler>y</tg-spoiler> \
        <pre><code class=\"language-rust\">fn main() {}</code></pre><blockquote expandable>quote</blockquote> a > b";
    let (status, body) = send_html(&tg, html);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], json!(true));
    let visible = "Build <ok> & \"done\" A😀 ieus link xy fn main() {}quote a > b";
    assert_eq!(body["result"]["text"], json!(visible));
    assert_eq!(body["result"]["message_id"], json!(1));
    assert_eq!(
        body["result"]["chat"],
        json!({"id": CHAT, "type": "private", "first_name": "User"})
    );
    let sent = tg.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].text.as_str(), sent[0].raw_text.as_str()),
        (visible, html)
    );
    assert_eq!(
        (sent[0].chat_id.as_str(), sent[0].parse_mode.as_deref()),
        ("42", Some("HTML"))
    );
}

#[test]
fn invalid_html_is_rejected_like_telegram() {
    let tg = FakeTelegram::start();
    for text in [
        "<x>hi</x>",
        "fish & chips",
        "<b>unclosed",
        "<b><i>x</b></i>",
        "a < b",
        "</b>",
        "<span>s</span>",
        "<b",
    ] {
        assert_error(
            send_html(&tg, text),
            400,
            "Bad Request: can't parse entities: ",
        );
    }
    let (_, body) = send_html(&tg, "ok <x>");
    assert_eq!(
        body["description"],
        json!("Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 3")
    );
    assert_error(
        send_html(&tg, "<b> </b>"),
        400,
        "Bad Request: message text is empty",
    );
    assert!(tg.messages().is_empty());
    let calls = tg.calls("sendMessage");
    assert_eq!(calls.len(), 10);
    assert!(calls
        .iter()
        .all(|c| c.status == 400 && c.description.is_some()));
}

#[test]
fn length_is_counted_in_utf16_code_units() {
    let tg = FakeTelegram::start();
    let emoji = "😀".repeat(2048); // 2048 chars, 4096 UTF-16 units
    let (status, body) = call(&tg, "sendMessage", json!({"chat_id": CHAT, "text": emoji}));
    assert_eq!(status, 200, "{body}");
    let too_long = format!("{emoji}a");
    assert_error(
        call(
            &tg,
            "sendMessage",
            json!({"chat_id": CHAT, "text": too_long}),
        ),
        400,
        "Bad Request: message is too long",
    );
    // Markup does not count, only the visible text.
    let (status, _) = send_html(&tg, &format!("<b>{emoji}</b>"));
    assert_eq!(status, 200);
    assert_eq!(tg.messages().len(), 2);
}

#[test]
fn callback_data_is_limited_to_64_bytes() {
    let tg = FakeTelegram::start();
    let keyboard =
        |data: &str| json!({"inline_keyboard": [[{"text": "Approve", "callback_data": data}]]});
    let ok = "é".repeat(32); // 32 chars, 64 bytes
    let (status, body) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": CHAT, "text": "q", "reply_markup": keyboard(&ok)}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["reply_markup"], keyboard(&ok));
    let too_long = format!("{ok}a");
    let params = json!({"chat_id": CHAT, "text": "q", "reply_markup": keyboard(&too_long)});
    assert_error(
        call(&tg, "sendMessage", params),
        400,
        "Bad Request: BUTTON_DATA_INVALID",
    );
    let no_action = json!({"chat_id": CHAT, "text": "q", "reply_markup": {"inline_keyboard": [[{"text": "t"}]]}});
    assert_error(
        call(&tg, "sendMessage", no_action),
        400,
        "Bad Request: can't parse inline keyboard button",
    );
    assert_eq!(tg.messages()[0].reply_markup, Some(keyboard(&ok)));
}

#[test]
fn rate_limit_carries_retry_after_in_the_body() {
    let tg = FakeTelegram::start();
    tg.rate_limit("sendMessage", 1, 7);
    let (status, body) = call(&tg, "sendMessage", json!({"chat_id": CHAT, "text": "hi"}));
    assert_eq!(status, 429);
    let expected = json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 7", "parameters": {"retry_after": 7}});
    assert_eq!(body, expected);
    assert_eq!(
        call(&tg, "sendMessage", json!({"chat_id": CHAT, "text": "hi"})).0,
        200
    );

    tg.fail_next("getMe", 2, 500, "Internal Server Error", None);
    assert_error(call(&tg, "getMe", json!({})), 500, "Internal Server Error");
    assert_error(call(&tg, "getMe", json!({})), 500, "Internal Server Error");
    let (status, body) = call(&tg, "getMe", json!({}));
    assert_eq!(
        (status, &body["result"]["id"], &body["result"]["is_bot"]),
        (200, &json!(123456), &json!(true))
    );
}

#[test]
fn form_encoded_and_query_string_parameters_work() {
    let tg = FakeTelegram::start();
    let markup = json!({"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}).to_string();
    let form = [
        ("chat_id", "-1001"),
        ("text", "a & b+c"),
        ("reply_markup", markup.as_str()),
    ];
    let (status, body) = read(
        agent()
            .post(method_url(&tg, "sendMessage"))
            .send_form(form)
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["chat"]["type"], json!("supergroup"));
    let url = method_url(&tg, "sendMessage");
    let query = agent()
        .get(&url)
        .query("chat_id", "7")
        .query("text", "<b>q?s</b>")
        .query("parse_mode", "HTML");
    let (status, body) = read(query.call().unwrap());
    assert_eq!(status, 200, "{body}");
    let sent = tg.messages();
    assert_eq!(
        (sent[0].chat_id.as_str(), sent[0].text.as_str()),
        ("-1001", "a & b+c")
    );
    assert_eq!(
        sent[0].reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"],
        json!("go")
    );
    assert_eq!(
        (sent[1].chat_id.as_str(), sent[1].text.as_str()),
        ("7", "q?s")
    );
}

#[test]
fn bad_tokens_unknown_methods_and_chats() {
    let tg = FakeTelegram::start();
    let bad = read(
        agent()
            .get(format!("{}/botnot-a-token/getMe", tg.url()))
            .call()
            .unwrap(),
    );
    assert_error(bad, 401, "Unauthorized");
    assert_error(call(&tg, "sendSticker", json!({})), 404, "Not Found");
    assert_eq!(
        call(&tg, "getme", json!({})).0,
        200,
        "method names are case-insensitive"
    );
    assert_eq!(
        tg.tokens_seen(),
        vec!["not-a-token".to_string(), TOKEN.to_string()]
    );
    assert_error(
        call(&tg, "sendMessage", json!({"text": "hi"})),
        400,
        "Bad Request: chat_id is empty",
    );
    tg.set_unknown_chat(-99);
    assert_error(
        call(&tg, "sendMessage", json!({"chat_id": "-99", "text": "hi"})),
        400,
        "Bad Request: chat not found",
    );
    let commands = json!([{"command": "status", "description": "Show status"}]);
    assert_eq!(
        call(&tg, "setMyCommands", json!({"commands": commands})).1["result"],
        json!(true)
    );
    assert_eq!(tg.commands(), Some(commands));
    assert_eq!(
        call(&tg, "deleteWebhook", json!({})).1["result"],
        json!(true)
    );
}

/// Starts a getUpdates on another thread; its answer arrives on the channel.
fn poll_in_background(tg: &FakeTelegram, params: Value) -> mpsc::Receiver<(u16, Value)> {
    let url = method_url(tg, "getUpdates");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        tx.send(post_with(&agent(), &url, &params).expect("transport"))
            .unwrap()
    });
    rx
}

#[test]
fn long_poll_returns_when_an_update_is_pushed() {
    let tg = FakeTelegram::start();
    let (_, sent) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": CHAT, "text": "Approve?"}),
    );
    let started = Instant::now();
    let answer = poll_in_background(&tg, json!({"timeout": 20}));
    tg.wait_until(DEADLINE, "getUpdates in flight", |s| {
        s.in_flight("getUpdates") == 1
    });
    let query_id = tg.press(CHAT, "alice", 1, CHAT, "approve:1");
    let (status, body) = answer.recv_timeout(DEADLINE).expect("poll answered");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status, 200, "{body}");
    let query = &body["result"][0]["callback_query"];
    assert_eq!(body["result"][0]["update_id"], json!(1));
    assert_eq!(query["id"], json!(query_id.to_string()));
    assert_eq!(
        (&query["data"], &query["from"]["username"]),
        (&json!("approve:1"), &json!("alice"))
    );
    assert_eq!(query["message"], sent["result"]);
    let params = json!({"callback_query_id": query_id.to_string(), "text": "Done"});
    assert_eq!(call(&tg, "answerCallbackQuery", params.clone()).0, 200);
    assert_error(
        call(&tg, "answerCallbackQuery", params),
        400,
        "Bad Request: query is too old",
    );
}

#[test]
fn empty_long_poll_returns_an_empty_list_after_the_timeout() {
    let tg = FakeTelegram::start();
    let started = Instant::now();
    let (status, body) = call(&tg, "getUpdates", json!({"timeout": 1}));
    let elapsed = started.elapsed();
    assert_eq!((status, &body), (200, &json!({"ok": true, "result": []})));
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[test]
fn a_second_concurrent_poll_makes_the_first_one_409() {
    let tg = FakeTelegram::start();
    let first = poll_in_background(&tg, json!({"timeout": 20}));
    tg.wait_until(DEADLINE, "first getUpdates in flight", |s| {
        s.in_flight("getUpdates") == 1
    });
    let second = poll_in_background(&tg, json!({"timeout": 20}));
    let (status, body) = first.recv_timeout(DEADLINE).expect("first poll answered");
    assert_eq!(status, 409);
    assert_eq!(body["description"], json!("Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"));
    tg.push_update(json!({"message": {"text": "x"}}));
    let (status, body) = second.recv_timeout(DEADLINE).expect("second poll answered");
    assert_eq!((status, body["result"].as_array().unwrap().len()), (200, 1));

    tg.set_conflict(true);
    assert_error(
        call(&tg, "getUpdates", json!({})),
        409,
        "Conflict: terminated by other getUpdates request",
    );
    tg.set_conflict(false);
    assert_eq!(call(&tg, "getUpdates", json!({})).0, 200);
}

#[test]
fn offset_confirms_updates() {
    let tg = FakeTelegram::start();
    for text in ["a", "b", "c"] {
        tg.user_message(7, "bob", 7, text, None);
    }
    let ids = |body: &Value| -> Vec<i64> {
        body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["update_id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&call(&tg, "getUpdates", json!({})).1), vec![1, 2, 3]);
    assert_eq!(
        ids(&call(&tg, "getUpdates", json!({})).1),
        vec![1, 2, 3],
        "unconfirmed updates come again"
    );
    assert_eq!(
        ids(&call(&tg, "getUpdates", json!({"offset": 3, "limit": 5})).1),
        vec![3]
    );
    assert_eq!(
        ids(&call(&tg, "getUpdates", json!({"offset": 1})).1),
        vec![3],
        "confirmed updates are forgotten"
    );
    assert_eq!(
        ids(&call(&tg, "getUpdates", json!({"offset": 4, "timeout": 0})).1),
        Vec::<i64>::new()
    );
    let (_, body) = call(&tg, "getUpdates", json!({"offset": 4}));
    assert_eq!(body["result"], json!([]));
}

#[test]
fn down_server_fails_requests_with_a_transport_error() {
    let tg = FakeTelegram::start();
    let agent = agent(); // keeps its connection alive: the outage must cut it too
    let url = method_url(&tg, "getMe");
    assert_eq!(post_with(&agent, &url, &json!({})).unwrap().0, 200);
    tg.set_down(true);
    assert!(post_with(&agent, &url, &json!({})).is_err());
    assert!(post_with(&ureq::Agent::new_with_defaults(), &url, &json!({})).is_err());
    tg.set_down(false);
    assert_eq!(post_with(&agent, &url, &json!({})).unwrap().0, 200);
    let calls = tg.calls("getMe");
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![200, 0, 0, 200]
    );
}

#[test]
fn markdown_v2_requires_escaping_reserved_characters() {
    let tg = FakeTelegram::start();
    let send = |text: &str| {
        call(
            &tg,
            "sendMessage",
            json!({"chat_id": CHAT, "text": text, "parse_mode": "MarkdownV2"}),
        )
    };
    let (_, body) = send("Build done.");
    assert_eq!(body["description"], json!("Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"));
    for text in [
        "a - b",
        "(x)",
        "*unbalanced",
        "wow!",
        "[text](https://e.com",
    ] {
        assert_error(send(text), 400, "Bad Request: can't parse entities: ");
    }
    let (status, body) = send("Build done\\.");
    assert_eq!(
        (status, &body["result"]["text"]),
        (200, &json!("Build done."))
    );
    let text =
        "*b* _i_ __u__ ~s~ ||sp|| `c.de\\`` [li\\.nk](https://e.com/a\\)b) ```rust\nlet x = 1;```";
    let (status, body) = send(text);
    assert_eq!(
        (status, &body["result"]["text"]),
        (200, &json!("b i u s sp c.de` li.nk let x = 1;"))
    );
}

#[test]
fn edits_update_the_current_message() {
    let tg = FakeTelegram::start();
    let keyboard = json!({"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]});
    call(
        &tg,
        "sendMessage",
        json!({"chat_id": CHAT, "text": "v1", "reply_markup": keyboard}),
    );
    let (status, body) = call(
        &tg,
        "editMessageReplyMarkup",
        json!({"chat_id": CHAT, "message_id": 1}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(tg.current(1).unwrap().reply_markup, None);
    assert_eq!(
        tg.messages()[0].reply_markup,
        Some(keyboard),
        "messages() keeps what was sent"
    );
    let edit = json!({"chat_id": CHAT, "message_id": 1, "text": "<b>v2</b>", "parse_mode": "HTML"});
    assert_eq!(
        call(&tg, "editMessageText", edit.clone()).1["result"]["text"],
        json!("v2")
    );
    assert_eq!(tg.current(1).unwrap().text, "v2");
    assert_error(
        call(&tg, "editMessageText", edit),
        400,
        "Bad Request: message is not modified",
    );
    let missing = json!({"chat_id": CHAT, "message_id": 99, "text": "x"});
    assert_error(
        call(&tg, "editMessageText", missing),
        400,
        "Bad Request: message to edit not found",
    );
    let other_chat = json!({"chat_id": 43, "message_id": 1, "text": "x"});
    assert_error(
        call(&tg, "editMessageText", other_chat),
        400,
        "Bad Request: message to edit not found",
    );
    assert_eq!(tg.calls("editMessageText").len(), 4);
}

#[test]
fn user_messages_and_replies() {
    let tg = FakeTelegram::start();
    call(
        &tg,
        "sendMessage",
        json!({"chat_id": CHAT, "text": "Question?"}),
    );
    let id = tg.user_message(CHAT, "carol", CHAT, "/answer yes", Some(1));
    assert_eq!(id, 2);
    let (_, body) = call(&tg, "getUpdates", json!({}));
    let message = &body["result"][0]["message"];
    assert_eq!(
        (&message["text"], &message["reply_to_message"]["text"]),
        (&json!("/answer yes"), &json!("Question?"))
    );
    assert_eq!(
        message["entities"],
        json!([{"offset": 0, "length": 7, "type": "bot_command"}])
    );
    let reply = |to: i64| {
        call(
            &tg,
            "sendMessage",
            json!({"chat_id": CHAT, "text": "ok", "reply_to_message_id": to}),
        )
    };
    assert_eq!(reply(2).0, 200);
    assert_error(
        reply(77),
        400,
        "Bad Request: message to be replied not found",
    );
}

#[test]
fn wait_messages_wakes_on_a_send_from_another_thread() {
    let tg = FakeTelegram::start();
    let url = method_url(&tg, "sendMessage");
    thread::spawn(move || {
        post_with(&agent(), &url, &json!({"chat_id": CHAT, "text": "late"})).unwrap()
    });
    assert_eq!(tg.wait_messages(1, DEADLINE)[0].text, "late");
}

#[test]
#[should_panic(expected = "timed out after 50ms waiting for a message that never comes")]
fn wait_until_panics_with_what_on_timeout() {
    let tg = FakeTelegram::start();
    tg.wait_until(
        Duration::from_millis(50),
        "a message that never comes",
        |s| !s.messages.is_empty(),
    );
}

#[test]
fn slow_delays_the_answer() {
    let tg = FakeTelegram::start();
    tg.set_slow(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(call(&tg, "getMe", json!({})).0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// Raw HTTP: a chunked body, keep-alive across two requests, then Connection: close.
#[test]
fn raw_http_chunked_keep_alive_and_close() {
    let tg = FakeTelegram::start();
    let mut stream = TcpStream::connect(tg.url().trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut roundtrip = |head: &str, body: &[u8]| -> (String, Value) {
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let (mut status, mut length, mut line) = (String::new(), 0, String::new());
        reader.read_line(&mut status).unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    };
    let head = format!("POST /bot{TOKEN}/sendMessage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    let (status, body) = roundtrip(
        &head,
        b"C\r\n{\"chat_id\":1\r\n10;ext=1\r\n,\"text\":\"chunky\"\r\n1\r\n}\r\n0\r\n\r\n",
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
    let head = format!("GET /bot{TOKEN}/getMe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, body) = roundtrip(&head, b"");
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
    let mut rest = Vec::new();
    assert_eq!(
        reader.read_to_end(&mut rest).unwrap(),
        0,
        "server closes after Connection: close"
    );
    assert_eq!(tg.messages()[0].text, "chunky");
}

#[test]
fn dropping_the_fake_frees_the_port() {
    let tg = FakeTelegram::start();
    let url = method_url(&tg, "getMe");
    assert_eq!(post_with(&agent(), &url, &json!({})).unwrap().0, 200);
    drop(tg);
    assert!(post_with(&agent(), &url, &json!({})).is_err());
}
