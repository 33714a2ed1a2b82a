//! Helpers for the webhook tests of issue 14 (rotation, versions,
//! per-endpoint settings, the developer tools): the config text of a
//! `[webhook]` table, JSON Schema validation of real bodies with the
//! reference `jsonschema` library, and `/metrics` parsed with the reference
//! `prometheus_client` parser.
//!
//! Include it after `receivers`, which it uses:
//! `#[path = "support/hooks.rs"] mod hooks;`.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::receivers::{receivers_dir, tools};

/// A TOML list of strings.
pub fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `[webhook]` with these secrets and plain endpoints, then
/// `[webhook.retry]` with `max_attempts` and 100 ms delays; `extra` goes
/// after (`[[webhook.endpoint]]` tables).
pub fn webhook_config(
    secrets: &[&str],
    endpoints: &[&str],
    max_attempts: u32,
    extra: &str,
) -> String {
    format!(
        "[webhook]\nenabled = true\nsecrets = {}\nendpoints = {}\ntimeout_seconds = 5\n\n\
         [webhook.retry]\nmax_attempts = {max_attempts}\ninitial_delay_ms = 100\nmax_delay_ms = 400\n\
         backoff_multiplier = 2.0\n{extra}\n",
        toml_list(secrets),
        toml_list(endpoints),
    )
}

fn python(script: &str, input: &[u8]) -> (bool, String, String) {
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (run tests/run as root to install what the tests need)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Validates each body (the exact text a receiver got) against
/// `schemas/v1/`: a payload by its `webhook_type`, an envelope and its
/// `data`. Panics with jsonschema's findings.
pub fn validate_v1(bodies: &[String]) {
    tools::require_python_module("jsonschema", "it checks bodies against schemas/v1");
    let input = serde_json::to_vec(bodies).unwrap();
    let script = receivers_dir().join("validate_v1.py");
    let (ok, out, err) = python(script.to_str().unwrap(), &input);
    assert!(
        ok && out.trim() == format!("VALID {}", bodies.len()),
        "bodies do not validate against schemas/v1:\n{out}{err}"
    );
}

/// Every sample of Prometheus text, parsed by `prometheus_client`:
/// `{"name", "labels", "value"}`. Panics if it does not parse.
pub fn metric_samples(text: &str) -> Vec<Value> {
    tools::require_python_module("prometheus_client", "it parses /metrics");
    let script = receivers_dir().join("../tools/parse_metrics.py");
    let (ok, out, err) = python(script.to_str().unwrap(), text.as_bytes());
    assert!(
        ok,
        "prometheus_client could not parse /metrics: {err}\n{text}"
    );
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of sample `name` with label endpoint=`endpoint`, if present.
pub fn endpoint_sample(samples: &[Value], name: &str, endpoint: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && s["labels"]["endpoint"] == endpoint)
        .and_then(|s| s["value"].as_f64())
}
