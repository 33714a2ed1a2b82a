"""Drives `cctelegram mcp` with the official Python SDK (mcp 2.x), for tests/mcp.rs.

Usage: client.py BIN CONFIG MODE, MODE being "auto" (the SDK's modern path:
server/discover, then the stateless 2026-07-28 envelope) or "legacy" (the
initialize handshake). Each step prints one line, `TAG <json>`, on stdout;
the Rust test reads them, acts on the fake Telegram where a step needs a
person (APPROVAL: press a button), and checks the results. Anything else
the SDK or the server says goes to stderr.
"""

import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError


def say(tag, value):
    print(tag, json.dumps(value), flush=True)


def structured(result):
    if result.is_error:
        raise SystemExit(f"tool failed: {result.content}")
    text = json.loads(result.content[0].text)
    if text != result.structured_content:
        raise SystemExit(f"text {text} is not structuredContent {result.structured_content}")
    return result.structured_content


async def main():
    binary, config, mode = sys.argv[1:4]
    server = StdioServerParameters(
        command=binary,
        args=["mcp", "--config", config],
        env={"PATH": os.environ.get("PATH", ""), "CCTELEGRAM_LOG": "info"},
    )
    async with Client(server, mode=mode, read_timeout_seconds=90) as c:
        say("VERSION", c.protocol_version)
        tools = await c.list_tools()
        say("TOOLS", [{"name": t.name, "input": t.input_schema, "output": t.output_schema} for t in tools.tools])

        call = lambda name, args: c.call_tool(name, args)
        say("EVENT", structured(await call("send_telegram_event", {
            "type": "build_completed", "title": f"Build: ok 🚀 ({mode})",
            "description": "All green", "source": "ci", "data": {"duration_ms": 1200}})))
        say("MESSAGE", structured(await call("send_telegram_message", {"message": f"Hello from python {mode}"})))
        say("COMPLETION", structured(await call("send_task_completion", {
            "task_id": f"task-{mode}", "title": "Refactor done", "results": "3 files changed",
            "files_affected": ["a.rs", "b.rs"], "duration_ms": 5321})))
        say("ALERT", structured(await call("send_performance_alert", {
            "title": "Memory high", "current_value": 91.5, "threshold": 80, "severity": "high"})))
        say("TYPES", structured(await call("list_event_types", {})))
        say("TYPES_GIT", structured(await call("list_event_types", {"category": "git_operations"})))
        say("STATUS", structured(await call("get_bridge_status", {})))

        approval = structured(await call("send_approval_request", {
            "title": f"Deploy v1.2.3 ({mode})", "description": "Ship it to prod?",
            "options": ["Ship", "Wait", "Abort"], "timeout_minutes": 30}))
        say("APPROVAL", approval)
        waited = structured(await call("wait_for_response", {"event_id": approval["event_id"], "timeout_seconds": 60}))
        say("WAITED", waited)
        say("PENDING", structured(await call("process_pending_responses", {"since_minutes": 5})))
        say("RESPONSES", structured(await call("get_telegram_responses", {"limit": 5})))
        say("NO_ANSWER", structured(await call("wait_for_response", {"event_id": "evt_nobody", "timeout_seconds": 0.2})))

        try:
            await call("send_telegram_message", {"text": "wrong name"})
            say("BAD_ARGS", None)
        except MCPError as e:
            say("BAD_ARGS", {"code": e.code, "message": str(e)})

        resources = await c.list_resources()
        read = {}
        for r in resources.resources:
            contents = (await c.read_resource(r.uri)).contents
            read[str(r.uri)] = json.loads(contents[0].text)
        say("RESOURCES", read)

        say("CLEARED", structured(await call("clear_old_responses", {"older_than_hours": 0})))
        say("DONE", True)


asyncio.run(main())
