//! What one `getUpdates` update says, read once into types.
//!
//! Updates come from the network, so nothing here trusts them: every field
//! is checked for its JSON type, numbers are read only when they are whole
//! and in range, and an update that cannot be acted on is a [`Malformed`]
//! naming what is wrong (with its `update_id` when it has one, so the poller
//! can still confirm it and move past). Pure: a `serde_json::Value` in, an
//! [`Update`] out; the poller decides what each one means.

use serde_json::Value;

/// Who pressed or wrote, as the Bot API's `from` object has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// An inline button pressed (`callback_query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Press {
    pub update_id: i64,
    /// For `answerCallbackQuery`.
    pub query_id: String,
    pub from: User,
    /// The button's `callback_data`; empty when the query has none (a game
    /// button), which resolves to no known button.
    pub data: String,
    /// The chat of the message that carries the button (see [`chat_key`]);
    /// `None` when Telegram no longer shows that message or for inline mode.
    pub chat: Option<String>,
    pub message_id: Option<i64>,
}

/// A message written to the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub update_id: i64,
    pub message_id: Option<i64>,
    pub from: User,
    /// The chat written in (see [`chat_key`]); replies go there.
    pub chat: String,
    /// `private`, `group`, `supergroup` or `channel`, when given.
    pub chat_type: Option<String>,
    /// `None` for a photo, a sticker, a document and the like.
    pub text: Option<String>,
    /// The message this one replies to.
    pub reply_to: Option<i64>,
    /// The forum topic it was written in.
    pub thread_id: Option<i64>,
    pub has_document: bool,
    pub has_photo: bool,
}

/// One update, as far as cctelegram cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Press(Press),
    Message(Message),
    /// Any other kind (an edited message, a poll, a member change): nothing
    /// to do but confirm it.
    Other {
        update_id: i64,
    },
}

impl Update {
    pub fn update_id(&self) -> i64 {
        match self {
            Update::Press(p) => p.update_id,
            Update::Message(m) => m.update_id,
            Update::Other { update_id } => *update_id,
        }
    }
}

/// Why an update cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Known when the update has a usable `update_id`: the poller can then
    /// confirm it instead of receiving it again forever.
    pub update_id: Option<i64>,
    /// What is wrong, naming the field, e.g. `callback_query.from.id is
    /// missing`.
    pub problem: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.update_id {
            Some(id) => write!(f, "update {id} is malformed: {}", self.problem),
            None => write!(f, "an update is malformed: {}", self.problem),
        }
    }
}

/// `getUpdates` answered with something that is not a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAList(pub &'static str);

impl std::fmt::Display for NotAList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "getUpdates answered {}, not a list of updates", self.0)
    }
}

use crate::event::kind_of;

/// Reads `result` of `getUpdates`: one entry per update, each parsed on its
/// own so that one bad update does not hide the others.
pub fn parse_all(result: &Value) -> Result<Vec<Result<Update, Malformed>>, NotAList> {
    match result {
        Value::Array(items) => Ok(items.iter().map(parse).collect()),
        other => Err(NotAList(kind_of(other))),
    }
}

/// The chat's key, as state files and response files name it: the numeric
/// id in decimal, or an `@channelname` as given. Telegram sends numbers;
/// a string is accepted because a chat key is a string everywhere else.
pub fn chat_key(chat: &Value) -> Option<String> {
    match chat.get("id")? {
        Value::Number(n) => n.as_i64().map(|i| i.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

struct Ctx {
    update_id: Option<i64>,
}

impl Ctx {
    fn bad(&self, problem: impl Into<String>) -> Malformed {
        Malformed {
            update_id: self.update_id,
            problem: problem.into(),
        }
    }

    /// An optional field that, when present and not null, has to be an
    /// integer.
    fn opt_int(&self, v: &Value, at: &str, field: &str) -> Result<Option<i64>, Malformed> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_i64().map(Some).ok_or_else(|| {
                self.bad(format!(
                    "{at}.{field} must be a whole number, found {}",
                    kind_of(x)
                ))
            }),
        }
    }

    fn opt_str(&self, v: &Value, at: &str, field: &str) -> Result<Option<String>, Malformed> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(x) => Err(self.bad(format!(
                "{at}.{field} must be a string, found {}",
                kind_of(x)
            ))),
        }
    }

    fn object<'a>(&self, v: &'a Value, at: &str) -> Result<&'a Value, Malformed> {
        match v {
            Value::Object(_) => Ok(v),
            x => Err(self.bad(format!("{at} must be an object, found {}", kind_of(x)))),
        }
    }

    fn user(&self, parent: &Value, at: &str) -> Result<User, Malformed> {
        let at = format!("{at}.from");
        let from = match parent.get("from") {
            None | Some(Value::Null) => return Err(self.bad(format!("{at} is missing"))),
            Some(v) => self.object(v, &at)?,
        };
        let id = self
            .opt_int(from, &at, "id")?
            .ok_or_else(|| self.bad(format!("{at}.id is missing")))?;
        Ok(User {
            id,
            username: self.opt_str(from, &at, "username")?,
            first_name: self.opt_str(from, &at, "first_name")?,
            last_name: self.opt_str(from, &at, "last_name")?,
        })
    }
}

/// Reads one update. A `callback_query` wins over a `message` when an
/// update (against the Bot API's rules) carries both.
pub fn parse(u: &Value) -> Result<Update, Malformed> {
    let mut cx = Ctx { update_id: None };
    cx.object(u, "the update")?;
    let update_id = match u.get("update_id") {
        None | Some(Value::Null) => return Err(cx.bad("update_id is missing")),
        Some(v) => v.as_i64().ok_or_else(|| {
            cx.bad(format!(
                "update_id must be a whole number, found {}",
                kind_of(v)
            ))
        })?,
    };
    // The poller confirms `update_id + 1`: i64::MAX would overflow it, and
    // Telegram's ids are positive.
    if !(0..i64::MAX).contains(&update_id) {
        return Err(cx.bad(format!("update_id {update_id} is out of range")));
    }
    cx.update_id = Some(update_id);
    if let Some(q) = u.get("callback_query").filter(|v| !v.is_null()) {
        return press(&cx, update_id, cx.object(q, "callback_query")?).map(Update::Press);
    }
    if let Some(m) = u.get("message").filter(|v| !v.is_null()) {
        return message(&cx, update_id, cx.object(m, "message")?).map(Update::Message);
    }
    Ok(Update::Other { update_id })
}

fn press(cx: &Ctx, update_id: i64, q: &Value) -> Result<Press, Malformed> {
    let at = "callback_query";
    let query_id = cx
        .opt_str(q, at, "id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| cx.bad("callback_query.id is missing"))?;
    let from = cx.user(q, at)?;
    let data = cx.opt_str(q, at, "data")?.unwrap_or_default();
    let (chat, message_id) = match q.get("message").filter(|v| !v.is_null()) {
        None => (None, None),
        Some(m) => {
            let m = cx.object(m, "callback_query.message")?;
            let chat = match m.get("chat").filter(|v| !v.is_null()) {
                None => None,
                Some(c) => Some(
                    chat_key(cx.object(c, "callback_query.message.chat")?).ok_or_else(|| {
                        cx.bad("callback_query.message.chat.id is missing or not a chat id")
                    })?,
                ),
            };
            (chat, cx.opt_int(m, "callback_query.message", "message_id")?)
        }
    };
    Ok(Press {
        update_id,
        query_id,
        from,
        data,
        chat,
        message_id,
    })
}

fn message(cx: &Ctx, update_id: i64, m: &Value) -> Result<Message, Malformed> {
    let at = "message";
    let from = cx.user(m, at)?;
    let c = match m.get("chat").filter(|v| !v.is_null()) {
        None => return Err(cx.bad("message.chat is missing")),
        Some(c) => cx.object(c, "message.chat")?,
    };
    let chat = chat_key(c).ok_or_else(|| cx.bad("message.chat.id is missing or not a chat id"))?;
    let reply_to = match m.get("reply_to_message").filter(|v| !v.is_null()) {
        None => None,
        Some(r) => {
            let r = cx.object(r, "message.reply_to_message")?;
            cx.opt_int(r, "message.reply_to_message", "message_id")?
        }
    };
    let present = |field: &str| m.get(field).is_some_and(|v| !v.is_null());
    Ok(Message {
        update_id,
        message_id: cx.opt_int(m, at, "message_id")?,
        from,
        chat,
        chat_type: cx.opt_str(c, "message.chat", "type")?,
        text: cx.opt_str(m, at, "text")?,
        reply_to,
        thread_id: cx.opt_int(m, at, "message_thread_id")?,
        has_document: present("document"),
        has_photo: present("photo"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({"id": 42, "is_bot": false, "first_name": "Ada", "last_name": "L", "username": "ada"})
    }

    fn problem(v: Value) -> String {
        parse(&v).unwrap_err().to_string()
    }

    #[test]
    fn a_button_press_reads_every_field() {
        let u = json!({"update_id": 7, "callback_query": {
            "id": "9001", "from": user(), "chat_instance": "1", "data": "approve_T1",
            "message": {"message_id": 55, "date": 0,
                        "chat": {"id": -1001234, "type": "supergroup"}}}});
        let want = Press {
            update_id: 7,
            query_id: "9001".into(),
            from: User {
                id: 42,
                username: Some("ada".into()),
                first_name: Some("Ada".into()),
                last_name: Some("L".into()),
            },
            data: "approve_T1".into(),
            chat: Some("-1001234".into()),
            message_id: Some(55),
        };
        assert_eq!(parse(&u), Ok(Update::Press(want)));
    }

    #[test]
    fn a_press_on_a_message_telegram_no_longer_shows_has_no_chat() {
        let u = json!({"update_id": 8, "callback_query": {"id": "1", "from": {"id": 5}}});
        let Ok(Update::Press(p)) = parse(&u) else {
            panic!("not a press: {:?}", parse(&u));
        };
        assert_eq!((p.chat, p.message_id, p.data.as_str()), (None, None, ""));
        assert_eq!(p.from.username, None);
    }

    #[test]
    fn a_message_reads_every_field() {
        let u = json!({"update_id": 9, "message": {
            "message_id": 12, "from": user(), "date": 0, "text": "ship it",
            "chat": {"id": 42, "type": "private"}, "message_thread_id": 3,
            "reply_to_message": {"message_id": 11, "chat": {"id": 42}, "date": 0}}});
        let Ok(Update::Message(m)) = parse(&u) else {
            panic!("not a message: {:?}", parse(&u));
        };
        assert_eq!(m.update_id, 9);
        assert_eq!(m.message_id, Some(12));
        assert_eq!(m.from.id, 42);
        assert_eq!(m.chat, "42");
        assert_eq!(m.chat_type.as_deref(), Some("private"));
        assert_eq!(m.text.as_deref(), Some("ship it"));
        assert_eq!((m.reply_to, m.thread_id), (Some(11), Some(3)));
        assert!(!m.has_document && !m.has_photo);
    }

    #[test]
    fn a_photo_or_a_document_has_no_text() {
        let u = json!({"update_id": 1, "message": {"message_id": 1, "from": user(),
            "chat": {"id": 42}, "photo": [{"file_id": "x"}], "document": {"file_id": "y"},
            "caption": "look"}});
        let Ok(Update::Message(m)) = parse(&u) else {
            panic!("not a message");
        };
        assert_eq!(m.text, None);
        assert!(m.has_document && m.has_photo);
    }

    #[test]
    fn other_kinds_are_confirmed_and_ignored() {
        let u = json!({"update_id": 3, "edited_message": {"message_id": 1}});
        assert_eq!(parse(&u), Ok(Update::Other { update_id: 3 }));
        let u = json!({"update_id": 4, "message": null});
        assert_eq!(parse(&u).map(|u| u.update_id()), Ok(4));
    }

    #[test]
    fn malformed_updates_say_what_is_wrong() {
        let cases = [
            (json!([1]), "the update must be an object, found a list"),
            (json!({}), "update_id is missing"),
            (
                json!({"update_id": "1"}),
                "update_id must be a whole number",
            ),
            (
                json!({"update_id": 1.5}),
                "update_id must be a whole number",
            ),
            (json!({"update_id": -1}), "update_id -1 is out of range"),
            (json!({"update_id": i64::MAX}), "out of range"),
            (
                json!({"update_id": 1, "callback_query": 5}),
                "callback_query must be an object",
            ),
            (
                json!({"update_id": 1, "callback_query": {"from": {"id": 1}}}),
                "callback_query.id is missing",
            ),
            (
                json!({"update_id": 1, "callback_query": {"id": "q"}}),
                "callback_query.from is missing",
            ),
            (
                json!({"update_id": 1, "callback_query": {"id": "q", "from": {"id": "42"}}}),
                "callback_query.from.id must be a whole number, found a string",
            ),
            (
                json!({"update_id": 1, "callback_query": {"id": "q", "from": {"id": 1}, "data": 7}}),
                "callback_query.data must be a string",
            ),
            (
                json!({"update_id": 1, "callback_query": {"id": "q", "from": {"id": 1},
                    "message": {"chat": {"id": [1]}}}}),
                "callback_query.message.chat.id is missing or not a chat id",
            ),
            (
                json!({"update_id": 1, "message": {"chat": {"id": 1}}}),
                "message.from is missing",
            ),
            (
                json!({"update_id": 1, "message": {"from": user()}}),
                "message.chat is missing",
            ),
            (
                json!({"update_id": 1, "message": {"from": user(), "chat": {"id": 1.5}}}),
                "message.chat.id is missing or not a chat id",
            ),
            (
                json!({"update_id": 1, "message": {"from": user(), "chat": {"id": 1}, "text": {}}}),
                "message.text must be a string, found an object",
            ),
            (
                json!({"update_id": 1, "message": {"from": user(), "chat": {"id": 1},
                    "reply_to_message": {"message_id": "2"}}}),
                "message.reply_to_message.message_id must be a whole number",
            ),
        ];
        for (input, want) in cases {
            let got = problem(input.clone());
            assert!(got.contains(want), "{input}: {got}");
        }
    }

    #[test]
    fn a_malformed_update_keeps_its_id_so_it_can_be_confirmed() {
        let e = parse(&json!({"update_id": 77, "message": {"chat": {"id": 1}}})).unwrap_err();
        assert_eq!(e.update_id, Some(77));
        assert_eq!(
            e.to_string(),
            "update 77 is malformed: message.from is missing"
        );
        assert_eq!(
            parse(&json!({"update_id": null})).unwrap_err().update_id,
            None
        );
    }

    #[test]
    fn a_result_that_is_not_a_list_is_an_error() {
        assert_eq!(
            parse_all(&json!({"update_id": 1})).unwrap_err().to_string(),
            "getUpdates answered an object, not a list of updates"
        );
        assert_eq!(parse_all(&json!(true)), Err(NotAList("a boolean")));
    }

    #[test]
    fn one_bad_update_does_not_hide_the_others() {
        let all = parse_all(&json!([{"update_id": 1}, "junk", {"update_id": 3}])).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], Ok(Update::Other { update_id: 1 }));
        assert!(all[1].is_err());
        assert_eq!(all[2], Ok(Update::Other { update_id: 3 }));
        assert_eq!(parse_all(&json!([])), Ok(Vec::new()));
    }

    #[test]
    fn chat_keys_are_decimal_ids_or_names() {
        assert_eq!(chat_key(&json!({"id": -100123})), Some("-100123".into()));
        assert_eq!(chat_key(&json!({"id": "@news"})), Some("@news".into()));
        assert_eq!(chat_key(&json!({"id": ""})), None);
        assert_eq!(chat_key(&json!({"id": 1e3})), None);
        assert_eq!(chat_key(&json!({})), None);
    }
}
