'use strict';
// One benchmark run of the official Node.js SDK, as its own process; the mirror of
// bench/ours.lua. Run by bench/run.lua: `node bench/sdk.js SCENARIO ARGS...`, prints one
// JSON line with `rss_kb` (VmHWM of this process at the end).
//   sign KIND SECONDS          @alicloud/openapi-util getRPCSignature, signatures per second
//   sequential URL WARMUP N    N QueryBatchRegisterDeviceStatus calls with @alicloud/pop-core
//   provision URL N RUN        register N named devices and fetch every secret (pop-core)
// The SDK packages come from tools/node (installed by `make deps`, tools/deps.sh).
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const sdkRequire = createRequire(path.join(__dirname, '..', 'tools', 'node', 'package.json'));
const KEY_ID = 'testid';
const SECRET = 'testsecret';
const PRODUCT_KEY = 'a1TestPK001';
// as in bench/common.lua
const NONCE = '3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf';
const TIMESTAMP = '2024-01-01T00:00:00Z';
const deviceName = (run, i) => `bench${run}_${String(i).padStart(5, '0')}`;

function peakRssKb() {
  const m = /VmHWM:\s*(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : null;
}

function signParams(kind) {
  const p = {
    Version: '2018-01-20', Format: 'JSON', AccessKeyId: KEY_ID, SignatureMethod: 'HMAC-SHA1',
    SignatureVersion: '1.0', SignatureNonce: NONCE, Timestamp: TIMESTAMP, RegionId: 'cn-shanghai',
    ProductKey: PRODUCT_KEY,
  };
  if (kind === 'register') {
    p.Action = 'BatchRegisterDevice';
    p.Count = '1000';
  } else if (kind === 'check1000') {
    p.Action = 'BatchCheckDeviceNames';
    p.DeviceName = Array.from({ length: 1000 }, (_, i) => deviceName('s', i + 1));
  } else {
    throw new Error(`unknown signing kind ${kind}`);
  }
  return p;
}

// The flat form (DeviceName.N), which is what our sign_rpc gets too.
function flat(params) {
  const out = {};
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x, i) => { out[`${k}.${i + 1}`] = x; });
    else out[k] = v;
  }
  return out;
}

function sign(kind, seconds) {
  const Util = sdkRequire('@alicloud/openapi-util').default;
  const nested = signParams(kind);
  const params = flat(nested);
  const loop = (p, budget) => {
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    do {
      for (let i = 0; i < 16; i++) {
        if (!Util.getRPCSignature(p, 'POST', SECRET)) throw new Error('no signature');
      }
      n += 16;
      t = performance.now();
    } while (t - t0 < budget * 1000);
    return [n, (t - t0) / 1000];
  };
  loop(params, seconds / 5); // warm-up (JIT)
  const [n, t] = loop(params, seconds);
  const [n2, t2] = loop(nested, seconds);
  return { signature: Util.getRPCSignature(params, 'POST', SECRET), ops: n, seconds: t,
    rate: n / t, rate_with_flatten: n2 / t2 };
}

function popClient(url) {
  const RPCClient = sdkRequire('@alicloud/pop-core').RPCClient;
  return new RPCClient({ accessKeyId: KEY_ID, accessKeySecret: SECRET, endpoint: url,
    apiVersion: '2018-01-20' });
}

async function sequential(url, warmup, n) {
  const client = popClient(url);
  const params = { ProductKey: PRODUCT_KEY, ApplyId: 100000 };
  const run = async (count) => {
    for (let i = 0; i < count; i++) {
      const r = await client.request('QueryBatchRegisterDeviceStatus', params, { method: 'POST' });
      if (r.Data.Status !== 'CREATE_SUCCESS') throw new Error('unexpected answer');
    }
  };
  await run(warmup);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  await run(n);
  const t = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const cpu = (c.user + c.system) / 1e6;
  return { calls: n, seconds: t, rate: n / t, cpu_seconds: cpu, cpu_us_per_call: cpu / n * 1e6 };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const WAIT = 500; // ms between status polls, and before repeating a throttled call

// Scenarios 3 and 4: the flow the docs show, written plainly: check all names at once
// (up to 10,000 per call), poll, register, poll, then read the pages one after another.
// A Throttling error is waited out and the call repeated (pop-core itself does not retry).
async function provision(url, n, run) {
  const client = popClient(url);
  const names = Array.from({ length: n }, (_, i) => deviceName(run, i + 1));
  let requests = 0;
  let throttled = 0;
  const call = async (action, params) => {
    for (;;) {
      requests++;
      try {
        return await client.request(action, params, { method: 'POST' });
      } catch (e) {
        if (!/^Throttling/.test(e.code || '')) throw e;
        throttled++;
        await sleep(WAIT);
      }
    }
  };
  const waitFor = async (applyId, ends) => {
    for (;;) {
      const r = await call('QueryBatchRegisterDeviceStatus', { ProductKey: PRODUCT_KEY, ApplyId: applyId });
      if (ends.includes(r.Data.Status)) return r.Data.Status;
      await sleep(WAIT);
    }
  };
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const check = await call('BatchCheckDeviceNames', { ProductKey: PRODUCT_KEY, DeviceName: names });
  const applyId = check.Data.ApplyId;
  const checked = await waitFor(applyId, ['CHECK_SUCCESS', 'CHECK_FAILED']);
  if (checked !== 'CHECK_SUCCESS') throw new Error(`check ended ${checked}`);
  await call('BatchRegisterDeviceWithApplyId', { ProductKey: PRODUCT_KEY, ApplyId: applyId });
  const created = await waitFor(applyId, ['CREATE_SUCCESS', 'CREATE_FAILED']);
  if (created !== 'CREATE_SUCCESS') throw new Error(`create ended ${created}`);
  const devices = [];
  for (let page = 1, pages = 1; page <= pages; page++) {
    const r = await call('QueryPageByApplyId', { ApplyId: applyId, PageSize: 50, CurrentPage: page });
    pages = r.PageCount;
    for (const d of r.ApplyDeviceList.ApplyDeviceInfo) {
      devices.push({ ProductKey: PRODUCT_KEY, DeviceName: d.DeviceName, DeviceSecret: d.DeviceSecret, IotId: d.IotId });
    }
  }
  const t = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const all = process.cpuUsage(); // since the process started
  return { seconds: t, cpu_seconds: (c.user + c.system) / 1e6,
    process_cpu_seconds: (all.user + all.system) / 1e6, devices: devices.filter((d) => d.DeviceSecret).length, requests, throttled };
}

async function main() {
  const [scenario, ...args] = process.argv.slice(2);
  let out;
  if (scenario === 'sign') out = sign(args[0], Number(args[1]));
  else if (scenario === 'sequential') out = await sequential(args[0], Number(args[1]), Number(args[2]));
  else if (scenario === 'provision') out = await provision(args[0], Number(args[1]), args[2]);
  else throw new Error(`unknown scenario ${scenario}`);
  out.rss_kb = peakRssKb();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
