#!/usr/bin/env node
// A JSON-RPC 2.0 front for LiteSVM (a real Solana VM, run in process) that
// speaks the subset of Solana's HTTP RPC our code calls, in the real RPC's
// JSON shapes, so that solana-go's rpc client works against it unchanged.
// The tests start it through the Go launcher (solanatest); it is never a
// production component.
//
//   node rpc.js [--listen 127.0.0.1:0]
//
// It prints one line {"listening":"127.0.0.1:PORT"} on stdout once it
// accepts connections, and exits when its stdin closes (so it dies with the
// test process that started it, even after kill -9).
//
// Chain model: one fork. Every landed transaction (and airdrop) takes the
// current slot, then the slot advances by one. A transaction is "confirmed"
// at once and "finalized" once 32 slots have passed (getTransaction with the
// default commitment, finalized, returns null until then, as on a real
// cluster). LiteSVM accepts only its latest blockhash; it changes when a
// test calls litesvm_expireBlockhash. Methods named litesvm_* exist only here.
//
// LiteSVM aborts the whole process on bytes it cannot deserialize, so every
// transaction is parsed here first, strictly, and refused with the real
// RPC's "failed to deserialize" error before LiteSVM sees it.
'use strict';

const http = require('node:http');
const { LiteSVM, FailedTransactionMetadata } = require('litesvm');
const { getBase58Encoder, getBase58Decoder, address } = require('@solana/kit');

const b58enc = getBase58Encoder(); // string -> bytes
const b58dec = getBase58Decoder(); // bytes -> string

const PACKET_DATA_SIZE = 1232; // largest transaction the cluster takes
const MAX_BASE58 = 1683;
const MAX_BASE64 = 1644;
const MAX_BODY = 64 << 10;
const LAMPORTS_PER_SIGNATURE = 5000; // LiteSVM's fee rate, as mainnet's
const FINALIZED_AFTER = 32n; // slots
const BLOCKHASH_VALID_SLOTS = 150n;
const VERSION = { 'solana-core': '2.2.0-litesvm-1.5.0', 'feature-set': 0 };

// TransactionError / InstructionError names in LiteSVM's enum order (its
// const enums vanish at run time).
const TX_ERRORS = ['AccountInUse', 'AccountLoadedTwice', 'AccountNotFound', 'ProgramAccountNotFound',
  'InsufficientFundsForFee', 'InvalidAccountForFee', 'AlreadyProcessed', 'BlockhashNotFound',
  'CallChainTooDeep', 'MissingSignatureForFee', 'InvalidAccountIndex', 'SignatureFailure',
  'InvalidProgramForExecution', 'SanitizeFailure', 'ClusterMaintenance', 'AccountBorrowOutstanding',
  'WouldExceedMaxBlockCostLimit', 'UnsupportedVersion', 'InvalidWritableAccount',
  'WouldExceedMaxAccountCostLimit', 'WouldExceedAccountDataBlockLimit', 'TooManyAccountLocks',
  'AddressLookupTableNotFound', 'InvalidAddressLookupTableOwner', 'InvalidAddressLookupTableData',
  'InvalidAddressLookupTableIndex', 'InvalidRentPayingAccount', 'WouldExceedMaxVoteCostLimit',
  'WouldExceedAccountDataTotalLimit', 'MaxLoadedAccountsDataSizeExceeded', 'ResanitizationNeeded',
  'InvalidLoadedAccountsDataSizeLimit', 'UnbalancedTransaction', 'ProgramCacheHitMaxLimit',
  'CommitCancelled'];
const IX_ERRORS = ['GenericError', 'InvalidArgument', 'InvalidInstructionData', 'InvalidAccountData',
  'AccountDataTooSmall', 'InsufficientFunds', 'IncorrectProgramId', 'MissingRequiredSignature',
  'AccountAlreadyInitialized', 'UninitializedAccount', 'UnbalancedInstruction', 'ModifiedProgramId',
  'ExternalAccountLamportSpend', 'ExternalAccountDataModified', 'ReadonlyLamportChange',
  'ReadonlyDataModified', 'DuplicateAccountIndex', 'ExecutableModified', 'RentEpochModified',
  'NotEnoughAccountKeys', 'AccountDataSizeChanged', 'AccountNotExecutable', 'AccountBorrowFailed',
  'AccountBorrowOutstanding', 'DuplicateAccountOutOfSync', 'InvalidError', 'ExecutableDataModified',
  'ExecutableLamportChange', 'ExecutableAccountNotRentExempt', 'UnsupportedProgramId', 'CallDepth',
  'MissingAccount', 'ReentrancyNotAllowed', 'MaxSeedLengthExceeded', 'InvalidSeeds', 'InvalidRealloc',
  'ComputationalBudgetExceeded', 'PrivilegeEscalation', 'ProgramEnvironmentSetupFailure',
  'ProgramFailedToComplete', 'ProgramFailedToCompile', 'Immutable', 'IncorrectAuthority',
  'AccountNotRentExempt', 'InvalidAccountOwner', 'ArithmeticOverflow', 'UnsupportedSysvar',
  'IllegalOwner', 'MaxAccountsDataAllocationsExceeded', 'MaxAccountsExceeded',
  'MaxInstructionTraceLengthExceeded', 'BuiltinProgramsMustConsumeComputeUnits', 'BorshIoError'];
// Display texts of the errors tests meet most, as the real RPC words them.
const TX_ERROR_TEXT = {
  AlreadyProcessed: 'This transaction has already been processed',
  BlockhashNotFound: 'Blockhash not found',
  SignatureFailure: 'Transaction did not pass signature verification',
  InsufficientFundsForFee: 'Insufficient funds for fee',
  AccountNotFound: 'Attempt to debit an account but found no record of a prior credit.',
  SanitizeFailure: 'Transaction failed to sanitize accounts offsets correctly',
};

class RpcError extends Error {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.data = data;
  }
}
const invalidParams = (msg) => new RpcError(-32602, msg);

// ---- transaction wire format (strict: canonical short_vec, no trailing bytes)

class Reader {
  constructor(buf) { this.buf = buf; this.off = 0; }
  need(n, what) {
    if (this.off + n > this.buf.length) throw new Error(`io error: unexpected end of file reading ${what}`);
  }
  u8(what) { this.need(1, what); return this.buf[this.off++]; }
  bytes(n, what) { this.need(n, what); const b = this.buf.subarray(this.off, this.off + n); this.off += n; return b; }
  shortVec(what) {
    let v = 0;
    for (let i = 0; i < 3; i++) {
      const b = this.u8(what);
      if (i === 2 && b > 3) throw new Error(`invalid length of ${what}: overflow`);
      v |= (b & 0x7f) << (7 * i);
      if ((b & 0x80) === 0) {
        if (i > 0 && b === 0) throw new Error(`invalid length of ${what}: alias (non-canonical)`);
        return v;
      }
    }
    throw new Error(`invalid length of ${what}: too long`);
  }
}

function parseTransaction(buf) {
  const r = new Reader(buf);
  const nsig = r.shortVec('signatures');
  if (nsig * 64 > buf.length) throw new Error('io error: signature count exceeds transaction size');
  const signatures = [];
  for (let i = 0; i < nsig; i++) signatures.push(r.bytes(64, 'signature'));
  const messageStart = r.off;
  let version = 'legacy';
  let first = r.u8('message header');
  if (first & 0x80) {
    version = first & 0x7f;
    if (version !== 0) throw new Error(`unsupported transaction version ${version}`);
    first = r.u8('message header');
  }
  const header = {
    numRequiredSignatures: first,
    numReadonlySignedAccounts: r.u8('message header'),
    numReadonlyUnsignedAccounts: r.u8('message header'),
  };
  const nkeys = r.shortVec('account keys');
  const accountKeys = [];
  for (let i = 0; i < nkeys; i++) accountKeys.push(r.bytes(32, 'account key'));
  const recentBlockhash = r.bytes(32, 'recent blockhash');
  const nix = r.shortVec('instructions');
  const instructions = [];
  for (let i = 0; i < nix; i++) {
    const programIdIndex = r.u8('program id index');
    const na = r.shortVec('instruction accounts');
    const accounts = Array.from(r.bytes(na, 'instruction accounts'));
    const nd = r.shortVec('instruction data');
    instructions.push({ programIdIndex, accounts, data: r.bytes(nd, 'instruction data') });
  }
  const addressTableLookups = [];
  if (version !== 'legacy') {
    const nl = r.shortVec('address table lookups');
    for (let i = 0; i < nl; i++) {
      const key = r.bytes(32, 'lookup table');
      const w = r.shortVec('writable indexes');
      const writableIndexes = Array.from(r.bytes(w, 'writable indexes'));
      const ro = r.shortVec('readonly indexes');
      addressTableLookups.push({ accountKey: key, writableIndexes, readonlyIndexes: Array.from(r.bytes(ro, 'readonly indexes')) });
    }
  }
  if (r.off !== buf.length) throw new Error(`${buf.length - r.off} trailing bytes`);
  return { signatures, version, header, accountKeys, recentBlockhash, instructions, addressTableLookups,
    messageBytes: buf.subarray(messageStart), raw: buf };
}

function uiTransaction(tx) {
  const message = {
    accountKeys: tx.accountKeys.map((k) => b58dec.decode(k)),
    header: tx.header,
    recentBlockhash: b58dec.decode(tx.recentBlockhash),
    instructions: tx.instructions.map((ix) => ({
      programIdIndex: ix.programIdIndex, accounts: ix.accounts, data: b58dec.decode(ix.data), stackHeight: null,
    })),
  };
  if (tx.version !== 'legacy') {
    message.addressTableLookups = tx.addressTableLookups.map((l) => ({
      accountKey: b58dec.decode(l.accountKey), writableIndexes: l.writableIndexes, readonlyIndexes: l.readonlyIndexes,
    }));
  }
  return { signatures: tx.signatures.map((s) => b58dec.decode(s)), message };
}

// ---- errors

function txErrorJSON(err) {
  if (typeof err === 'number') return TX_ERRORS[err] ?? `Unknown(${err})`;
  switch (err.constructor.name) {
    case 'TransactionErrorInstructionError': {
      const ie = err.err();
      let v;
      if (typeof ie === 'number') v = IX_ERRORS[ie] ?? `Unknown(${ie})`;
      else if (ie.constructor.name === 'InstructionErrorCustom') v = { Custom: ie.code };
      else v = 'BorshIoError';
      return { InstructionError: [err.index, v] };
    }
    case 'TransactionErrorDuplicateInstruction': return { DuplicateInstruction: err.index };
    case 'TransactionErrorInsufficientFundsForRent': return { InsufficientFundsForRent: { account_index: err.accountIndex } };
    case 'TransactionErrorProgramExecutionTemporarilyRestricted':
      return { ProgramExecutionTemporarilyRestricted: { account_index: err.accountIndex } };
    default: return String(err);
  }
}

function txErrorText(j) {
  if (typeof j === 'string') return TX_ERROR_TEXT[j] ?? j;
  if (j.InstructionError) {
    const [i, e] = j.InstructionError;
    return `Error processing Instruction ${i}: ${typeof e === 'string' ? e : JSON.stringify(e)}`;
  }
  return JSON.stringify(j);
}

// ---- the chain

const svm = new LiteSVM();
const history = new Map(); // base58 signature -> {slot, blockTime, tx, meta, err}
let blockhashSlot = svm.getClock().slot;

function slot() { return svm.getClock().slot; }

function nextSlot() {
  const c = svm.getClock();
  c.slot = c.slot + 1n;
  c.unixTimestamp = BigInt(Math.floor(Date.now() / 1000));
  svm.setClock(c);
}

function context() { return { slot: Number(slot()), apiVersion: VERSION['solana-core'] }; }

function commitmentOf(cfg) {
  const c = cfg?.commitment ?? 'finalized';
  if (!['processed', 'confirmed', 'finalized'].includes(c)) throw invalidParams(`Invalid commitment: ${c}`);
  return c;
}

function isFinal(rec) { return slot() - rec.slot >= FINALIZED_AFTER; }

function decodeKey(s, what) {
  if (typeof s !== 'string') throw invalidParams(`Invalid param: ${what} is not a string`);
  try { return address(s); } catch { throw invalidParams(`Invalid param: Invalid ${what}`); }
}

function decodeWire(s, encoding) {
  if (typeof s !== 'string') throw invalidParams('Invalid params: transaction is not a string');
  let buf;
  if (encoding === 'base58') {
    if (s.length > MAX_BASE58) {
      throw invalidParams(`base58 encoded solana_transaction::versioned::VersionedTransaction too large: ${s.length} bytes (max: encoded/raw ${MAX_BASE58}/${PACKET_DATA_SIZE})`);
    }
    try { buf = Buffer.from(b58enc.encode(s)); } catch { throw invalidParams('invalid base58 encoding: InvalidCharacter'); }
  } else if (encoding === 'base64') {
    if (s.length > MAX_BASE64) {
      throw invalidParams(`base64 encoded solana_transaction::versioned::VersionedTransaction too large: ${s.length} bytes (max: encoded/raw ${MAX_BASE64}/${PACKET_DATA_SIZE})`);
    }
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw invalidParams('invalid base64 encoding: InvalidByte');
    buf = Buffer.from(s, 'base64');
  } else {
    throw invalidParams(`Invalid params: unsupported encoding: ${encoding}. Supported encodings: base58, base64`);
  }
  if (buf.length > PACKET_DATA_SIZE) {
    throw invalidParams(`decoded solana_transaction::versioned::VersionedTransaction too large: ${buf.length} bytes (max: ${PACKET_DATA_SIZE} bytes)`);
  }
  try {
    return parseTransaction(buf);
  } catch (e) {
    throw invalidParams(`failed to deserialize solana_transaction::versioned::VersionedTransaction: ${e.message}`);
  }
}

const methods = {
  getHealth: () => 'ok',
  getVersion: () => VERSION,
  getSlot: () => Number(slot()),
  getBlockHeight: () => Number(slot()),
  getLatestBlockhash: (p) => {
    commitmentOf(p[0]);
    return { context: context(), value: { blockhash: svm.latestBlockhash(), lastValidBlockHeight: Number(blockhashSlot + BLOCKHASH_VALID_SLOTS) } };
  },
  isBlockhashValid: (p) => {
    if (typeof p[0] !== 'string') throw invalidParams('Invalid param: blockhash is not a string');
    return { context: context(), value: p[0] === svm.latestBlockhash() };
  },
  getBalance: (p) => {
    const k = decodeKey(p[0], 'pubkey');
    commitmentOf(p[1]);
    return { context: context(), value: Number(svm.getBalance(k) ?? 0n) };
  },
  requestAirdrop: (p) => {
    const k = decodeKey(p[0], 'pubkey');
    if (!Number.isSafeInteger(p[1]) || p[1] <= 0) throw invalidParams('Invalid param: lamports must be a positive integer');
    commitmentOf(p[2]);
    const res = svm.airdrop(k, BigInt(p[1]));
    if (res == null || res instanceof FailedTransactionMetadata) {
      const err = res ? txErrorJSON(res.err()) : 'unknown';
      throw new RpcError(-32603, `airdrop failed: ${txErrorText(err)}`);
    }
    const sig = b58dec.decode(res.signature());
    history.set(sig, { slot: slot(), blockTime: Number(svm.getClock().unixTimestamp), tx: null, meta: res, err: null });
    nextSlot();
    return sig;
  },
  sendTransaction: (p) => {
    const cfg = p[1] ?? {};
    if (typeof cfg !== 'object') throw invalidParams('Invalid params: config is not an object');
    const tx = decodeWire(p[0], cfg.encoding ?? 'base58');
    if (tx.signatures.length === 0) throw invalidParams('invalid transaction: Transaction has no signatures');
    const sig = b58dec.decode(tx.signatures[0]);
    // The blockhash check is the runtime's; LiteSVM checks signatures too.
    const balances = () => tx.accountKeys.map((k) => Number(svm.getBalance(address(b58dec.decode(k))) ?? 0n));
    const pre = balances();
    const wire = new Uint8Array(tx.raw);
    const res = tx.version === 'legacy' ? svm.inner.sendLegacyTransaction(wire) : svm.inner.sendVersionedTransaction(wire);
    if (res instanceof FailedTransactionMetadata) {
      const err = txErrorJSON(res.err());
      if (cfg.skipPreflight) return sig; // dropped by the cluster: its status stays null
      if (err === 'SignatureFailure') throw new RpcError(-32003, 'Transaction signature verification failure');
      if (err === 'SanitizeFailure') throw invalidParams(`invalid transaction: ${txErrorText(err)}`);
      const meta = res.meta();
      throw new RpcError(-32002, `Transaction simulation failed: ${txErrorText(err)}`, {
        err, logs: meta.logs(), accounts: null, unitsConsumed: Number(meta.computeUnitsConsumed()),
        returnData: null, innerInstructions: null, replacementBlockhash: null, loadedAccountsDataSize: 0,
      });
    }
    history.set(sig, { slot: slot(), blockTime: Number(svm.getClock().unixTimestamp), tx, meta: res, err: null, pre, post: balances() });
    nextSlot();
    return sig;
  },
  getSignatureStatuses: (p) => {
    if (!Array.isArray(p[0])) throw invalidParams('Invalid params: signatures is not an array');
    if (p[0].length > 256) throw invalidParams('Too many inputs provided; max 256');
    const value = p[0].map((s) => {
      const rec = typeof s === 'string' ? history.get(s) : undefined;
      if (!rec) return null;
      const fin = isFinal(rec);
      return {
        slot: Number(rec.slot), confirmations: fin ? null : Number(slot() - rec.slot), err: rec.err,
        status: { Ok: null }, confirmationStatus: fin ? 'finalized' : 'confirmed',
      };
    });
    return { context: context(), value };
  },
  getTransaction: (p) => {
    const cfg = typeof p[1] === 'string' ? { encoding: p[1] } : (p[1] ?? {});
    const c = commitmentOf(cfg);
    if (c === 'processed') throw invalidParams('Method does not support commitment below `confirmed`');
    const rec = typeof p[0] === 'string' ? history.get(p[0]) : undefined;
    if (!rec || !rec.tx || (c === 'finalized' && !isFinal(rec))) return null;
    if (rec.tx.version !== 'legacy' && cfg.maxSupportedTransactionVersion === undefined) {
      throw new RpcError(-32015, 'Transaction version (0) is not supported by the requesting client. Please try the request again with the following configuration parameter: "maxSupportedTransactionVersion": 0');
    }
    const enc = cfg.encoding ?? 'json';
    let transaction;
    const raw = rec.tx.raw;
    if (enc === 'json') transaction = uiTransaction(rec.tx);
    else if (enc === 'base64') transaction = [raw.toString('base64'), 'base64'];
    else if (enc === 'base58') transaction = [b58dec.decode(raw), 'base58'];
    else throw invalidParams(`Invalid params: unsupported encoding: ${enc}`);
    const out = {
      slot: Number(rec.slot), blockTime: rec.blockTime, transaction,
      meta: {
        err: null, status: { Ok: null }, fee: LAMPORTS_PER_SIGNATURE * rec.tx.header.numRequiredSignatures,
        preBalances: rec.pre, postBalances: rec.post, innerInstructions: [], preTokenBalances: [], postTokenBalances: [],
        logMessages: rec.meta.logs(), rewards: [], loadedAddresses: { writable: [], readonly: [] },
        computeUnitsConsumed: Number(rec.meta.computeUnitsConsumed()),
      },
    };
    if (cfg.maxSupportedTransactionVersion !== undefined) out.version = rec.tx.version;
    return out;
  },
  // Test-only: make the current blockhash stale (a new one replaces it).
  litesvm_expireBlockhash: () => {
    svm.expireBlockhash();
    nextSlot();
    blockhashSlot = slot();
    return { blockhash: svm.latestBlockhash(), slot: Number(slot()) };
  },
  // Test-only: let n slots pass (finalizes what landed 32 slots ago).
  litesvm_advanceSlots: (p) => {
    const n = p[0];
    if (!Number.isSafeInteger(n) || n < 1 || n > 1e6) throw invalidParams('Invalid param: want a slot count 1..1000000');
    const c = svm.getClock();
    c.slot = c.slot + BigInt(n);
    c.unixTimestamp = BigInt(Math.floor(Date.now() / 1000));
    svm.setClock(c);
    return Number(slot());
  },
};

function handle(req) {
  if (req === null || typeof req !== 'object' || Array.isArray(req) || req.jsonrpc !== '2.0' || typeof req.method !== 'string') {
    return { jsonrpc: '2.0', error: { code: -32600, message: 'Invalid request' }, id: null };
  }
  const id = req.id ?? null;
  const fn = Object.hasOwn(methods, req.method) ? methods[req.method] : undefined;
  if (!fn) return { jsonrpc: '2.0', error: { code: -32601, message: 'Method not found' }, id };
  const params = req.params ?? [];
  if (!Array.isArray(params)) return { jsonrpc: '2.0', error: { code: -32602, message: 'Invalid params: expected an array' }, id };
  try {
    return { jsonrpc: '2.0', result: fn(params), id };
  } catch (e) {
    if (e instanceof RpcError) {
      const error = { code: e.code, message: e.message };
      if (e.data !== undefined) error.data = e.data;
      return { jsonrpc: '2.0', error, id };
    }
    process.stderr.write(`litesvm-rpc: ${req.method}: ${e.stack}\n`);
    return { jsonrpc: '2.0', error: { code: -32603, message: `Internal error: ${e.message}` }, id };
  }
}

function main() {
  let listen = '127.0.0.1:0';
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--listen' && i + 1 < args.length) listen = args[++i];
    else { process.stderr.write(`usage: rpc.js [--listen host:port]\n`); process.exit(2); }
  }
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(colon + 1));

  const server = http.createServer((req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(body);
    };
    if (req.method !== 'POST') return reply(405, '');
    const chunks = [];
    let size = 0;
    let aborted = false;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY && !aborted) {
        aborted = true;
        reply(413, '');
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      if (aborted) return;
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return reply(200, JSON.stringify({ jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null }));
      }
      if (Array.isArray(body)) {
        if (body.length === 0) return reply(200, JSON.stringify({ jsonrpc: '2.0', error: { code: -32600, message: 'Invalid request' }, id: null }));
        return reply(200, JSON.stringify(body.map(handle)));
      }
      reply(200, JSON.stringify(handle(body)));
    });
  });
  server.listen(port, host, () => {
    const a = server.address();
    const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    process.stdout.write(JSON.stringify({ listening: `${h}:${a.port}` }) + '\n');
  });
  server.on('error', (e) => { process.stderr.write(`litesvm-rpc: ${e.message}\n`); process.exit(1); });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

main();
