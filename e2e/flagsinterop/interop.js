// Evaluates flags through the OpenFeature Node.js server SDK against a
// running Sluice, with one of the published providers, for interop_test.go.
//
// Usage: node interop.js MODE, with MODE one of
//   rpc         @openfeature/flagd-provider 0.16, RPC resolver, which calls
//               flagd.evaluation.v2
//   rpc-v1      @openfeature/flagd-provider 0.13 (installed under the alias
//               flagd-provider-evaluation-v1), RPC resolver, which calls
//               flagd.evaluation.v1
//   in-process  @openfeature/flagd-provider 0.16, in-process resolver fed by
//               flagd.sync.v1 (the provider evaluates with flagd-core)
//   ofrep       @openfeature/ofrep-provider (OFREP over HTTP)
// and the environment variables SLUICE_HOST, SLUICE_PORT and SLUICE_ENV
// (empty: no environment is named, the server's default applies).
//
// Protocol on stdin/stdout, one JSON document per line:
//   in:  the cases, [{"kind": "boolean"|"string"|"number"|"object",
//        "key": ..., "default": ..., "context": {...}}, ...]
//   out: {"phase": 1, "results": [...]} (one evaluation details per case)
//   in:  "changed" once the test has changed the flags
//   out: {"phase": 2, "changed": [keys the provider reported, or null],
//        "results": [...]}
// Logs go to stderr.
'use strict';

const readline = require('node:readline');
const { OpenFeature, ProviderEvents } = require('@openfeature/server-sdk');
const { FlagdProvider } = require('@openfeature/flagd-provider');
const { FlagdProvider: FlagdProviderV1 } = require('flagd-provider-evaluation-v1');
const { OFREPProvider } = require('@openfeature/ofrep-provider');

const mode = process.argv[2];
const host = process.env.SLUICE_HOST || '127.0.0.1';
const port = Number(process.env.SLUICE_PORT);
const env = process.env.SLUICE_ENV || '';

function log(...args) {
  console.error(`[${mode}]`, ...args);
}

function provider() {
  switch (mode) {
    case 'rpc':
    case 'rpc-v1':
    case 'in-process': {
      const resolverType = mode === 'in-process' ? 'in-process' : 'rpc';
      const options = { host, port, tls: false, resolverType, deadlineMs: 5000 };
      if (env) {
        options.selector = `env:${env}`;
      }
      const Provider = mode === 'rpc-v1' ? FlagdProviderV1 : FlagdProvider;
      return new Provider(options, {
        error: log,
        warn: log,
        info: () => {},
        debug: () => {},
      });
    }
    case 'ofrep': {
      const options = { baseUrl: `http://${host}:${port}` };
      if (env) {
        options.headers = [['X-Sluice-Env', env]];
      }
      return new OFREPProvider(options);
    }
  }
  throw new Error(`unknown mode ${mode}`);
}

async function evaluate(client, cases) {
  const results = [];
  for (const c of cases) {
    let d;
    switch (c.kind) {
      case 'boolean':
        d = await client.getBooleanDetails(c.key, c.default, c.context);
        break;
      case 'string':
        d = await client.getStringDetails(c.key, c.default, c.context);
        break;
      case 'number':
        d = await client.getNumberDetails(c.key, c.default, c.context);
        break;
      case 'object':
        d = await client.getObjectDetails(c.key, c.default, c.context);
        break;
      default:
        throw new Error(`unknown kind ${c.kind}`);
    }
    results.push({
      value: d.value,
      variant: d.variant,
      reason: d.reason,
      errorCode: d.errorCode,
      errorMessage: d.errorMessage,
      flagMetadata: d.flagMetadata,
    });
  }
  return results;
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) {
      throw new Error('stdin closed');
    }
    return value;
  };

  // Record configuration changes from the start, so that none is missed.
  let changes = [];
  let onChange = () => {};
  OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, (details) => {
    changes.push(...((details && details.flagsChanged) || []));
    onChange();
  });

  const cases = JSON.parse(await next());
  await OpenFeature.setProviderAndWait(provider());
  const client = OpenFeature.getClient();
  process.stdout.write(JSON.stringify({ phase: 1, results: await evaluate(client, cases) }) + '\n');

  if ((await next()) !== 'changed') {
    throw new Error('expected "changed"');
  }
  let changed = null;
  if (mode !== 'ofrep') {
    // flagd providers learn of changes from a stream: wait for the event.
    // The test bounds the wait; this asserts nothing about speed.
    if (changes.length === 0) {
      await new Promise((resolve) => {
        onChange = resolve;
      });
    }
    changed = [...new Set(changes)].sort();
  }
  process.stdout.write(JSON.stringify({ phase: 2, changed, results: await evaluate(client, cases) }) + '\n');
  await OpenFeature.close();
}

main().then(
  () => process.exit(0),
  (err) => {
    log(err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
