'use strict';
// Drives the official Alibaba Cloud Node.js SDKs against a running aliyun-iot emulator and
// prints one TAP line per check ("ok - name" / "not ok - name # why").
// Usage: node official_sdk.js <endpoint http://127.0.0.1:PORT/> <AccessKeyId> <secret> <ProductKey>
// pop-core: V1 (HMAC-SHA1), GET with everything in the URL and POST with everything in a
// form body. @alicloud/iot20180120 on @alicloud/openapi-client: ACS3-HMAC-SHA256 (its
// default) and V1 (signatureAlgorithm "v2"); a generic callApi puts names in a form body.
const RPCClient = require('@alicloud/pop-core').RPCClient;
const OpenApi = require('@alicloud/openapi-client');
const Iot = require('@alicloud/iot20180120');

const [endpoint, akid, secret, pk] = process.argv.slice(2);
const host = endpoint.replace(/^https?:\/\//, '').replace(/\/$/, '');
let failed = 0;

function check(name, cond, why) {
  if (cond) console.log(`ok - ${name}`);
  else { failed++; console.log(`not ok - ${name} # ${why || ''}`); }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function attempt(name, fn) {
  try { await fn(); } catch (e) { failed++; console.log(`not ok - ${name} # threw ${e.code || ''} ${e.message}`); }
}

async function until(query, want) {
  for (let i = 0; i < 200; i++) {
    const status = await query();
    if (status === want) return status;
    await sleep(20);
  }
  return 'never ' + want;
}

async function popCore(method) {
  const client = new RPCClient({ accessKeyId: akid, accessKeySecret: secret, endpoint, apiVersion: '2018-01-20' });
  const call = (action, params) => client.request(action, params, { method });
  const names = [1, 2, 3].map((i) => `pop_${method}_${i}`);
  const params = { ProductKey: pk };
  names.forEach((n, i) => { params[`DeviceName.${i + 1}`] = n; });
  const check1 = await call('BatchCheckDeviceNames', params);
  const applyId = check1.Data.ApplyId;
  check(`pop-core ${method} BatchCheckDeviceNames`, check1.Success === true && Number.isInteger(Number(applyId)), JSON.stringify(check1));
  const status = () => call('QueryBatchRegisterDeviceStatus', { ApplyId: applyId, ProductKey: pk }).then((r) => r.Data.Status);
  check(`pop-core ${method} status CHECK_SUCCESS`, (await until(status, 'CHECK_SUCCESS')) === 'CHECK_SUCCESS');
  const reg = await call('BatchRegisterDeviceWithApplyId', { ApplyId: applyId, ProductKey: pk });
  check(`pop-core ${method} BatchRegisterDeviceWithApplyId`, reg.Success === true && String(reg.Data.ApplyId) === String(applyId));
  check(`pop-core ${method} status CREATE_SUCCESS`, (await until(status, 'CREATE_SUCCESS')) === 'CREATE_SUCCESS');
  const page = await call('QueryPageByApplyId', { ApplyId: applyId, PageSize: 50, CurrentPage: 1 });
  const got = page.ApplyDeviceList.ApplyDeviceInfo.map((d) => d.DeviceName).sort();
  check(`pop-core ${method} QueryPageByApplyId`, page.Total === 3 && JSON.stringify(got) === JSON.stringify(names), JSON.stringify(page));
  const batch = await call('BatchRegisterDevice', { ProductKey: pk, Count: 2 });
  const bstatus = () => call('QueryBatchRegisterDeviceStatus', { ApplyId: batch.Data.ApplyId, ProductKey: pk }).then((r) => r.Data.Status);
  check(`pop-core ${method} BatchRegisterDevice`, (await until(bstatus, 'CREATE_SUCCESS')) === 'CREATE_SUCCESS');
  const bpage = await call('QueryPageByApplyId', { ApplyId: batch.Data.ApplyId });
  check(`pop-core ${method} BatchRegisterDevice pages`, bpage.Total === 2 && bpage.ApplyDeviceList.ApplyDeviceInfo.every((d) => d.DeviceSecret.length === 32));
  const bad = new RPCClient({ accessKeyId: akid, accessKeySecret: secret + 'x', endpoint, apiVersion: '2018-01-20' });
  let code;
  try { await bad.request('BatchRegisterDevice', { ProductKey: pk, Count: 1 }, { method }); } catch (e) { code = e.code; }
  check(`pop-core ${method} wrong secret rejected`, code === 'SignatureDoesNotMatch', code);
}

function teaClient(algorithm, key) {
  const config = new OpenApi.Config({ accessKeyId: akid, accessKeySecret: key || secret, endpoint: host,
    protocol: endpoint.startsWith('https') ? 'https' : 'http', regionId: 'cn-shanghai' });
  if (algorithm) config.signatureAlgorithm = algorithm;
  return new Iot.default(config);
}

async function tea(label, algorithm) {
  const client = teaClient(algorithm);
  const names = [1, 2].map((i) => `tea_${label}_${i}`);
  const list = names.map((n, i) => new Iot.BatchCheckDeviceNamesRequestDeviceNameList({ deviceName: n, deviceNickname: `智能灯_${i}` }));
  const c = await client.batchCheckDeviceNames(new Iot.BatchCheckDeviceNamesRequest({ productKey: pk, deviceNameList: list }));
  const applyId = c.body.data.applyId;
  check(`tea ${label} BatchCheckDeviceNames`, c.body.success === true && applyId > 0, JSON.stringify(c.body));
  const status = () => client.queryBatchRegisterDeviceStatus(new Iot.QueryBatchRegisterDeviceStatusRequest({ applyId, productKey: pk })).then((r) => r.body.data.status);
  check(`tea ${label} status CHECK_SUCCESS`, (await until(status, 'CHECK_SUCCESS')) === 'CHECK_SUCCESS');
  const r = await client.batchRegisterDeviceWithApplyId(new Iot.BatchRegisterDeviceWithApplyIdRequest({ applyId, productKey: pk }));
  check(`tea ${label} BatchRegisterDeviceWithApplyId`, r.body.success === true);
  check(`tea ${label} status CREATE_SUCCESS`, (await until(status, 'CREATE_SUCCESS')) === 'CREATE_SUCCESS');
  const p = await client.queryPageByApplyId(new Iot.QueryPageByApplyIdRequest({ applyId, pageSize: 10, currentPage: 1 }));
  const got = p.body.applyDeviceList.applyDeviceInfo.map((d) => d.deviceName).sort();
  check(`tea ${label} QueryPageByApplyId`, p.body.total === 2 && JSON.stringify(got) === JSON.stringify(names), JSON.stringify(p.body));
  const b = await client.batchRegisterDevice(new Iot.BatchRegisterDeviceRequest({ productKey: pk, count: 3 }));
  const bstatus = () => client.queryBatchRegisterDeviceStatus(new Iot.QueryBatchRegisterDeviceStatusRequest({ applyId: b.body.data.applyId, productKey: pk })).then((x) => x.body.data.status);
  check(`tea ${label} BatchRegisterDevice`, (await until(bstatus, 'CREATE_SUCCESS')) === 'CREATE_SUCCESS');
  let code;
  try {
    await teaClient(algorithm, secret + 'x').batchRegisterDevice(new Iot.BatchRegisterDeviceRequest({ productKey: pk, count: 1 }));
  } catch (e) { code = e.code; }
  check(`tea ${label} wrong secret rejected`, code === 'SignatureDoesNotMatch', code);
}

// ACS3 with the names in a form body (the placement of the Go/Python SDK models, docs/wire.md §1).
async function teaFormBody() {
  const client = teaClient();
  const params = new OpenApi.Params({ action: 'BatchCheckDeviceNames', version: '2018-01-20', protocol: 'HTTP',
    pathname: '/', method: 'POST', authType: 'AK', style: 'RPC', reqBodyType: 'formData', bodyType: 'json' });
  const req = new OpenApi.OpenApiRequest({ query: { ProductKey: pk },
    body: { 'DeviceName.1': 'tea_form 1', 'DeviceName.2': 'tea_form_2' } });
  const res = await client.callApi(params, req, new (require('@alicloud/tea-util').RuntimeOptions)({}));
  const applyId = res.body.Data.ApplyId;
  check('tea ACS3 form body BatchCheckDeviceNames', res.body.Success === true, JSON.stringify(res.body));
  const status = () => client.queryBatchRegisterDeviceStatus(new Iot.QueryBatchRegisterDeviceStatusRequest({ applyId, productKey: pk })).then((r) => r.body.data);
  let data;
  for (let i = 0; i < 200; i++) { data = await status(); if (data.status !== 'CHECK') break; await sleep(20); }
  check('tea ACS3 form body invalid name reported', data.status === 'CHECK_FAILED' && data.invalidList.name[0] === 'tea_form 1', JSON.stringify(data));
}

(async () => {
  await attempt('pop-core GET', () => popCore('GET'));
  await attempt('pop-core POST', () => popCore('POST'));
  await attempt('tea ACS3', () => tea('ACS3'));
  await attempt('tea V1', () => tea('V1', 'v2'));
  await attempt('tea ACS3 form body', teaFormBody);
  process.exit(failed ? 1 : 0);
})();
