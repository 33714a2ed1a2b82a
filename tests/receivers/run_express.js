// Runs the spec's Express receiver (express_receiver.js, a verbatim copy of
// the "Express.js Webhook Handler" in spec/webhooks.md) unmodified, for the
// integration tests in tests/support/receivers.rs.
//
// The snippet is kept byte-for-byte, so everything it needs from outside is
// set up here before it is required:
// - the two helpers it calls but does not define, as globals that log;
// - its hard-coded `app.listen(3000)` goes to 127.0.0.1:$PORT instead
//   (PORT=0: a free port chosen by the OS), by wrapping net.Server's listen;
// - one line per request on stdout, `REQ <method> <path> <status>`, once the
//   answer is sent (status 0 if the connection closed before that), and one
//   `LISTENING 127.0.0.1:<port>` line once it accepts connections.
// CCTELEGRAM_WEBHOOK_SECRET is read by the snippet itself. With
// EXIT_ON_STDIN_EOF=1 the process exits when its stdin closes, so a test
// that dies without killing it does not leave it behind.
'use strict';

const net = require('net');
const path = require('path');

const HOST = '127.0.0.1';
const port = Number(process.env.PORT || '0');
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`run_express: bad PORT ${JSON.stringify(process.env.PORT)}`);
  process.exit(2);
}
if (!process.env.CCTELEGRAM_WEBHOOK_SECRET) {
  console.error('run_express: CCTELEGRAM_WEBHOOK_SECRET is not set');
  process.exit(2);
}
try {
  require.resolve('express', { paths: [__dirname] });
} catch (e) {
  console.error(
    'run_express: the express package is missing; install it with ' +
      '`npm ci --prefix tests/receivers` (from the crate root)'
  );
  process.exit(3);
}

global.executeApprovedAction = (event, response) => {
  console.log(`executeApprovedAction: ${event && event.title}`);
};
global.sendHealthAlert = (health) => {
  console.log(`sendHealthAlert: ${health && health.status}`);
};

function logRequests(server) {
  server.on('request', (req, res) => {
    // Express rewrites req.url while routing; keep the one that came in.
    const target = req.url.split('?')[0];
    let logged = false;
    const log = (status) => {
      if (!logged) {
        logged = true;
        console.log(`REQ ${req.method} ${target} ${status}`);
      }
    };
    res.on('finish', () => log(res.statusCode));
    res.on('close', () => log(res.writableFinished ? res.statusCode : 0));
  });
}

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== 3000) {
    return listen.apply(this, args);
  }
  const callback = args.find((a) => typeof a === 'function');
  logRequests(this);
  this.on('error', (e) => {
    console.error(`run_express: cannot listen on ${HOST}:${port}: ${e.message}`);
    process.exit(1);
  });
  return listen.call(this, { host: HOST, port }, () => {
    if (callback) callback();
    console.log(`LISTENING ${HOST}:${this.address().port}`);
  });
};

if (process.env.EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
process.on('SIGTERM', () => process.exit(0));

require(path.join(__dirname, 'express_receiver.js'));
