// The typed services and sipd.events.v1 (Subscribe, WatchStatistics) from Node, as a
// stub user writes it: @grpc/grpc-js with the service
// definitions loaded from sipd's .proto files by @grpc/proto-loader, and the standard
// error details (google.rpc.Status in grpc-status-details-bin) decoded with protobufjs.
// Run with `node --test` by tests/node/node_client_test.cc against a real sipd whose
// mi_grpc address is in SIPD_GRPC_TARGET (the .proto directory in SIPD_PROTO_DIR).
// Skipped without them.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import path from 'node:path';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const target = process.env.SIPD_GRPC_TARGET;
const protoDir = process.env.SIPD_PROTO_DIR;
const skip = !target || !protoDir ? 'SIPD_GRPC_TARGET / SIPD_PROTO_DIR not set (run through CTest)' : false;

let core;
let stats;
let location;
let management;
let events;
let rpcStatus;
let errorInfo;
let badRequest;

before(async () => {
  if (skip) return;
  const definition = protoLoader.loadSync(
    ['sipd/core/v1/core.proto', 'sipd/statistics/v1/statistics.proto',
      'sipd/usrloc/v1/usrloc.proto', 'sipd/mi/v1/mi.proto', 'sipd/events/v1/events.proto'],
    { includeDirs: [protoDir], keepCase: true, longs: Number, enums: String, defaults: true });
  const sipd = grpc.loadPackageDefinition(definition).sipd;
  const credentials = grpc.credentials.createInsecure();
  core = new sipd.core.v1.CoreService(target, credentials);
  stats = new sipd.statistics.v1.StatisticsService(target, credentials);
  location = new sipd.usrloc.v1.LocationService(target, credentials);
  management = new sipd.mi.v1.Management(target, credentials);
  events = new sipd.events.v1.EventService(target, credentials);
  const root = new protobuf.Root();
  root.resolvePath = (_origin, file) => path.join(protoDir, file);
  await root.load(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
  rpcStatus = root.lookupType('google.rpc.Status');
  errorInfo = root.lookupType('google.rpc.ErrorInfo');
  badRequest = root.lookupType('google.rpc.BadRequest');
});

after(() => {
  for (const client of [core, stats, location, management, events]) client?.close();
});

function deadline() {
  return { deadline: Date.now() + 10000 };
}

// A unary call as a promise.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, deadline(), (error, response) => (error ? reject(error) : resolve(response)));
  });
}

// The ErrorInfo and BadRequest of a failed call.
function details(error) {
  const [bytes] = error.metadata.get('grpc-status-details-bin');
  assert.ok(bytes, 'no grpc-status-details-bin');
  const status = rpcStatus.decode(bytes);
  assert.equal(status.code, error.code);
  let info = null;
  let bad = null;
  for (const any of status.details) {
    if (any.type_url.endsWith('/google.rpc.ErrorInfo')) info = errorInfo.decode(any.value);
    if (any.type_url.endsWith('/google.rpc.BadRequest')) bad = badRequest.decode(any.value);
  }
  assert.ok(info, 'no google.rpc.ErrorInfo');
  assert.equal(info.domain, 'sipd');
  return { info, bad };
}

test('CoreService', { skip }, async () => {
  const processes = await call(core, 'ListProcesses', {});
  assert.equal(processes.processes[0].type, 'attendant');
  assert.ok(processes.processes.some((p) => p.type.startsWith('SIP receiver udp:')));
  assert.ok(processes.processes.every((p) => !p.type.endsWith(' ')));
  const version = await call(core, 'GetVersion', {});
  assert.equal(version.os, 'linux');
  const level = await call(core, 'GetLogLevel', {});
  assert.equal(typeof level.level, 'number');
});

test('StatisticsService', { skip }, async () => {
  const reply = await call(stats, 'GetStatistics', { names: ['core:', 'usrloc:registered_users'] });
  const byName = new Map(reply.statistics.map((s) => [`${s.group}:${s.name}`, s]));
  assert.equal(byName.get('core:rcv_requests').resettable, true);
  assert.equal(typeof byName.get('usrloc:registered_users').value, 'number');
  await assert.rejects(call(stats, 'GetStatistics', { names: ['nosuch'] }), (error) => {
    assert.equal(error.code, grpc.status.NOT_FOUND);
    const { info } = details(error);
    assert.equal(info.reason, 'MI_404');
    assert.equal(info.metadata.mi_reason, 'Statistics Not Found');
    return true;
  });
});

test('LocationService', { skip }, async () => {
  await call(location, 'AddContact', {
    table: 'location', aor: 'node_alice', uri: 'sip:node@192.0.2.30', expires_seconds: 0, q: 0.75,
  });
  const got = await call(location, 'GetContacts', { table: 'location', aor: 'node_alice' });
  const contact = got.aor.contacts[0];
  assert.equal(contact.uri, 'sip:node@192.0.2.30');
  assert.equal(contact.q, 0.75);
  assert.equal(contact.state, 'CONTACT_STATE_NEW');
  // A permanent contact has no expires_seconds (proto3 optional: the oneof is unset).
  assert.equal(contact._expires_seconds, undefined);

  const streamed = await new Promise((resolve, reject) => {
    const aors = [];
    const stream = location.StreamContacts({ table: 'location' }, deadline());
    stream.on('data', (part) => aors.push(...part.aors.map((a) => a.aor)));
    stream.on('error', reject);
    stream.on('end', () => resolve(aors));
  });
  assert.ok(streamed.includes('node_alice'));

  await call(location, 'RemoveAor', { table: 'location', aor: 'node_alice' });
  await assert.rejects(call(location, 'AddContact', { aor: 'x', uri: 'sip:x@h' }), (error) => {
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    const { info, bad } = details(error);
    assert.equal(info.reason, 'INVALID_REQUEST');
    assert.equal(bad.field_violations[0].field, 'table');
    return true;
  });
});

test('Management errors keep the sipd-mi trailers and add the standard details', { skip }, async () => {
  await assert.rejects(call(management, 'Execute', { command: 'no_such_command' }), (error) => {
    assert.equal(error.code, grpc.status.NOT_FOUND);
    assert.equal(error.metadata.get('sipd-mi-outcome')[0], 'not-available');
    assert.equal(details(error).info.metadata.outcome, 'not-available');
    return true;
  });
});

// sipd.events.v1: a Subscribe stream gets the E_UL_AOR_INSERT of a contact added after
// the stream became active (its headers arrived), and WatchStatistics sends a sample.
test('EventService Subscribe and WatchStatistics', { skip }, async () => {
  const stream = events.Subscribe(
    { events: ['E_UL_AOR_INSERT'], filter: { aor: 'node_event' } }, deadline());
  const first = new Promise((resolve, reject) => {
    stream.on('data', resolve);
    stream.on('error', (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
  });
  await new Promise((resolve) => stream.once('metadata', resolve)); // subscribed from here on
  await call(location, 'AddContact', {
    table: 'location', aor: 'node_event', uri: 'sip:node_event@192.0.2.31', expires_seconds: 120,
  });
  const response = await first;
  stream.cancel();
  assert.equal(response.events.length, 1);
  const [event] = response.events;
  assert.equal(event.name, 'E_UL_AOR_INSERT');
  assert.equal(event.params.aor, 'node_event');
  assert.equal(event.seq, 1);
  assert.ok(event.time.seconds > 0);
  await call(location, 'RemoveAor', { table: 'location', aor: 'node_event' });

  const watch = events.WatchStatistics(
    { names: ['core:rcv_requests'], interval: { seconds: 0, nanos: 100000000 } }, deadline());
  const sample = await new Promise((resolve, reject) => {
    watch.on('data', resolve);
    watch.on('error', (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
  });
  watch.cancel();
  assert.equal(sample.seq, 1);
  assert.equal(sample.statistics.length, 1);
  assert.equal(sample.statistics[0].name, 'rcv_requests');
  assert.equal(sample.statistics[0].kind, 'KIND_COUNTER');
});
