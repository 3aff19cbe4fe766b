#!/usr/bin/env node
// Starts the local Learning Record Store used by footprint's tests and demo: Learning Locker's
// `xapi-statements` (GPL-3.0), run as this separate process and never linked into footprint.
//
// xapi-statements listens on every interface (it calls `app.listen(port)` with no host). This
// wrapper pins every server it opens to 127.0.0.1, so the LRS is reachable from this machine only,
// and gives it safe defaults for a store without MongoDB or Redis:
//   AUTH_REPO=test       any credentials are accepted (no Authorization header needed)
//   EVENTS_REPO=test     no Redis
//   MODELS_REPO=memory   statements live in memory: they are lost when the process stops
//   STORAGE_REPO=local   attachments on disk, under FS_LOCAL_STORAGE_DIR (default: a temp folder)
// Every variable can still be overridden from the environment; pipelines/local/lrs.py sets them.
'use strict';

const net = require('net');
const os = require('os');
const path = require('path');

const HOST = '127.0.0.1';

// The package reads `.env` from the working directory (dotenv) and writes access logs under it by
// default: run from this folder, which has no `.env`, so only the environment configures it.
process.chdir(__dirname);

const setDefault = (name, value) => {
  if (process.env[name] === undefined || process.env[name] === '') {
    process.env[name] = value;
  }
};
setDefault('EXPRESS_PORT', '8200');
setDefault('AUTH_REPO', 'test');
setDefault('EVENTS_REPO', 'test');
setDefault('MODELS_REPO', 'memory');
setDefault('STORAGE_REPO', 'local');
setDefault('FS_LOCAL_STORAGE_DIR', path.join(os.tmpdir(), 'footprint-local-lrs'));
setDefault('EXPRESS_MORGAN_DIRECTORY', path.join(process.env.FS_LOCAL_STORAGE_DIR, 'accessLogs'));
// Voiding and reference updates finish before the POST answers, so a GET right after sees them.
setDefault('SERVICE_AWAIT_UPDATES', 'true');
// Quiet-ish: warnings and errors only (every rejected request is logged as an error).
setDefault('WINSTON_CONSOLE_LEVEL', 'warn');
// aws-sdk v2 (a dependency, unused here) prints an end-of-support notice on load.
setDefault('AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE', '1');

// Pin every listening socket to HOST. http.Server inherits listen() from net.Server, so patching
// net.Server covers express' `app.listen(port, cb)` and anything else the package might open.
const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const first = args[0];
  if (first !== null && typeof first === 'object' && !Array.isArray(first)) {
    // listen(options[, backlog][, callback]); a handle or a UNIX socket path is left alone.
    if (first.path === undefined && first.handle === undefined && first._handle === undefined
        && first.fd === undefined) {
      args[0] = Object.assign({}, first, { host: HOST });
    }
  } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback]): insert or replace the host.
    if (typeof args[1] === 'string') {
      args[1] = HOST;
    } else {
      args.splice(1, 0, HOST);
    }
  } else if (first === undefined || typeof first === 'function') {
    // listen([callback]): a random port, on HOST.
    args.splice(0, 0, 0, HOST);
  }
  // A port already in use (or any other listen error) ends the process with one readable line,
  // not the package's multi-page dump of an uncaught exception.
  const onError = (err) => {
    process.stderr.write(`footprint-local-lrs: cannot listen on ${HOST}: ${err.message}\n`);
    process.exit(1);
  };
  this.once('error', onError);
  this.once('listening', () => {
    this.removeListener('error', onError);
    const address = this.address();
    if (address !== null && typeof address === 'object') {
      process.stdout.write(
        `footprint-local-lrs: listening on http://${address.address}:${address.port}/xAPI/` +
        ` (pid ${process.pid})\n`,
      );
    }
  });
  return originalListen.apply(this, args);
};

// Stop promptly on SIGTERM/SIGINT even before the package installs its own handlers.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => process.exit(0));
}

// With FOOTPRINT_LRS_PARENT_PID set (pipelines/local/lrs.py sets it), exit once that process is
// gone, so a test run that is killed does not leave an LRS behind.
const parentPid = Number(process.env.FOOTPRINT_LRS_PARENT_PID || 0);
if (parentPid > 0) {
  setInterval(() => {
    if (process.ppid !== parentPid) {
      process.stderr.write(`footprint-local-lrs: parent ${parentPid} is gone; exiting\n`);
      process.exit(0);
    }
  }, 1000).unref();
}

// Paging fix for MODELS_REPO=memory. Each stored statement gets an internal `_id` from uuid.v1(),
// and the `more` cursor of GET /statements keeps the statements whose `_id` string sorts after
// (ascending) or before (descending) the last one returned. A v1 uuid string starts with the low
// 32 bits of its 100 ns timestamp, which wrap every 429.5 s: paging across a wrap silently drops
// statements (measured: 1,000 posted across one, 500 returned). Mongo mode uses ObjectIds, which
// sort by time; here `_id` becomes a uuid-shaped, fixed-width, strictly increasing hex string
// (100 ns ticks since 1970 plus a counter), so string order is insertion order, as with Mongo.
// uuid.v1 is used for nothing else in the package (uuid.v4 makes statement ids).
{
  const uuid = require(require.resolve('uuid', {
    paths: [path.dirname(require.resolve('xapi-statements/package.json'))],
  }));
  let last = 0n;
  uuid.v1 = function monotonicId() {
    const now = BigInt(Date.now()) * 10000n;
    last = now > last ? now : last + 1n;
    const hex = last.toString(16).padStart(32, '0');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-` +
      hex.slice(20);
  };
}

// The package's logger (winston 2) always colours its console output; a log file wants plain text.
if (!process.stdout.isTTY) {
  try {
    const winston = require(require.resolve('winston', {
      paths: [path.dirname(require.resolve('xapi-statements/package.json'))],
    }));
    const { Console } = winston.transports;
    const originalLog = Console.prototype.log;
    Console.prototype.log = function plainLog(...args) {
      this.colorize = false;
      return originalLog.apply(this, args);
    };
  } catch (err) {
    // Cosmetic only: keep the colours rather than fail to start.
  }
}

require('xapi-statements/dist/server.js');
