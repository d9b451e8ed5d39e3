// Azure's official Node service SDKs (azure-iot-provisioning-service, azure-iothub), unpatched,
// against the loadtest DPS emulator. Usage:
//   node service.js exercise GROUP_ID   SDK calls on every service route; prints one JSON object
//   node service.js count GROUP_ID      {"registrations": N, "devices": {hub: N}}
// Environment: DPS_CS (provisioningserviceowner), HUB_CS_0, HUB_CS_1, … (iothubowner),
// EMULATOR=127.0.0.1:PORT (the emulator's HTTPS listener), CA=path of its CA certificate.
//
// The SDKs connect to each connection string's HostName on port 443. So that the test needs
// neither DNS entries nor port 443, Node's https.request (the call the SDKs' HTTP layer makes) is
// wrapped to open the socket to EMULATOR instead, with the emulator's CA and TLS name, keeping the
// HostName in the Host header (the emulator picks the hub by it) and in the SAS tokens. Nothing
// in the SDKs changes: requests, paths, headers, bodies and the parsing of the answers are theirs.
'use strict';
const https = require('https');
const fs = require('fs');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Registry } = require('azure-iothub');

const [host, port] = process.env.EMULATOR.split(':');
const ca = fs.readFileSync(process.env.CA);
const original = https.request;
https.request = function (options, callback) {
  const to = Object.assign({}, options);
  to.headers = Object.assign({ Host: options.host }, options.headers || {});
  to.host = host;
  to.port = Number(port);
  to.servername = 'localhost';
  to.ca = ca;
  return original.call(https, to, callback);
};

const dps = ProvisioningServiceClient.fromConnectionString(process.env.DPS_CS);
const hubs = [];
for (let i = 0; process.env['HUB_CS_' + i]; i++) {
  const cs = process.env['HUB_CS_' + i];
  hubs.push({ host: /HostName=([^;]+)/.exec(cs)[1], registry: Registry.fromConnectionString(cs) });
}

async function status(p) {
  try {
    await p;
    return 200;
  } catch (e) {
    return (e.response && e.response.statusCode) || String(e);
  }
}

async function registrations(group) {
  const q = dps.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, group, 50);
  let all = [];
  while (true) {
    // The promise form must be given the token: next() alone starts over.
    const page = await q.next(q.continuationToken);
    all = all.concat(page.responseBody);
    if (!q.hasMoreResults) break;
  }
  return all;
}

async function exercise(group) {
  const out = {};
  // Enrollment group: read, update under its ETag, a stale ETag refused.
  const g = (await dps.getEnrollmentGroup(group)).responseBody;
  out.group_webhook = g.customAllocationDefinition && g.customAllocationDefinition.webhookUrl;
  const stale = g.etag;
  g.initialTwin = g.initialTwin || { tags: {}, properties: { desired: {} } };
  const updated = (await dps.createOrUpdateEnrollmentGroup(g)).responseBody;
  out.group_updated = updated.etag !== stale;
  out.stale_update = await status(dps.createOrUpdateEnrollmentGroup(Object.assign({}, g, { etag: stale })));
  // An individual enrollment: create, read, delete, then gone.
  const id = 'sdk-individual-contoso-tstrsd-007';
  const created = (await dps.createOrUpdateIndividualEnrollment({
    registrationId: id,
    attestation: { type: 'symmetricKey', symmetricKey: {} },
    allocationPolicy: 'custom',
    customAllocationDefinition: g.customAllocationDefinition,
    iotHubs: g.iotHubs,
  })).responseBody;
  out.individual_keys_generated = !!(created.attestation.symmetricKey && created.attestation.symmetricKey.primaryKey);
  out.individual_get = await status(dps.getIndividualEnrollment(id));
  out.individual_delete = await status(dps.deleteIndividualEnrollment(id));
  out.individual_after = await status(dps.getIndividualEnrollment(id));
  // Registration records of the group, and one read.
  const regs = await registrations(group);
  out.registrations = regs.length;
  if (regs.length) {
    out.registration_get = await status(dps.getDeviceRegistrationState(regs[0].registrationId));
  }
  out.missing_registration = await status(dps.getDeviceRegistrationState('never-registered-device'));
  // A hub's registry: create, read, bulk delete, list.
  const hub = hubs[0].registry;
  out.device_create = await status(hub.create({ deviceId: 'sdk-made-device' }));
  out.device_get = await status(hub.get('sdk-made-device'));
  const bulk = (await hub.removeDevices([{ deviceId: 'sdk-made-device' }], true)).responseBody;
  out.bulk_delete_ok = bulk.isSuccessful;
  out.device_after = await status(hub.get('sdk-made-device'));
  out.hub_devices = {};
  for (const h of hubs) out.hub_devices[h.host] = (await h.registry.list()).responseBody.length;
  return out;
}

async function count(group) {
  const devices = {};
  for (const h of hubs) devices[h.host] = (await h.registry.list()).responseBody.length;
  let regs = 0;
  try {
    regs = (await registrations(group)).length;
  } catch (e) {
    if (!(e.response && e.response.statusCode === 404)) throw e;
  }
  return { registrations: regs, devices };
}

(async () => {
  const [what, group] = process.argv.slice(2);
  const result = what === 'exercise' ? await exercise(group) : await count(group);
  console.log(JSON.stringify(result));
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
