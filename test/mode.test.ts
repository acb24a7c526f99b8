/**
 * The protocol mode (src/protocol/mode.ts): what each mode says it can do, that its codecs carry
 * it, that the flag functions of session.ts give the same bytes as the mode's own factory, and
 * that a server credential made once (src/protocol/credential.ts) serves many tunnels unchanged.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { passwordCredential } from '../src/protocol/credential.js';
import { BROOK_MODE, protocolMode, WOB_MODE } from '../src/protocol/mode.js';
import { createClientCodec, createServerCodec, prepareClientKey } from '../src/protocol/session.js';
import { MAX_UDP_PAYLOAD, MAX_WOB_UDP_PAYLOAD } from '../src/protocol/sizes.js';

const PASSWORD = 'mode-test';
const DST = { type: 'ipv4' as const, host: '127.0.0.1', port: 80 };
const now = () => 1_700_000_000_000;
const random = (n: number) => Buffer.alloc(n, 9);

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('protocol modes', () => {
  it('the flag picks the mode; each mode states its capabilities', () => {
    expect(protocolMode(undefined)).toBe(BROOK_MODE);
    expect(protocolMode(false)).toBe(BROOK_MODE);
    expect(protocolMode(true)).toBe(WOB_MODE);
    expect({ ...BROOK_MODE, clientCodec: 0, serverCodec: 0, prepareClientKey: 0 }).toEqual({
      name: 'brook', splicable: false, replayNonce: true, keepalive: true, preparable: true, maxUdpPayload: MAX_UDP_PAYLOAD,
      clientCodec: 0, serverCodec: 0, prepareClientKey: 0,
    });
    expect({ ...WOB_MODE, clientCodec: 0, serverCodec: 0, prepareClientKey: 0 }).toEqual({
      name: 'withoutBrookProtocol', splicable: true, replayNonce: false, keepalive: false, preparable: false, maxUdpPayload: MAX_WOB_UDP_PAYLOAD,
      clientCodec: 0, serverCodec: 0, prepareClientKey: 0,
    });
  });

  it.each([['brook', BROOK_MODE], ['withoutBrookProtocol', WOB_MODE]] as const)('%s codecs carry their mode; the flag functions give the same bytes', (_name, mode) => {
    const flag = mode === WOB_MODE;
    const o = { password: PASSWORD, network: 'tcp' as const, destination: DST, now, random };
    const viaMode = mode.clientCodec(o);
    const viaFlag = createClientCodec({ ...o, withoutBrookProtocol: flag });
    expect(viaMode.mode).toBe(mode);
    expect(viaFlag.mode).toBe(mode);
    const hello = viaMode.hello();
    expect(viaFlag.hello().equals(hello)).toBe(true);
    const server = mode.serverCodec(passwordCredential(PASSWORD), { now, random });
    expect(server.mode).toBe(mode);
    expect(createServerCodec({ password: PASSWORD, withoutBrookProtocol: flag, now }).mode).toBe(mode);
    expect(server.push(hello, () => undefined)?.destination).toEqual(DST);
    // the capabilities match what the codecs do
    expect(typeof server.keepalive === 'function').toBe(mode.keepalive);
    expect(server.clientNonce !== null).toBe(mode.replayNonce);
    expect(prepareClientKey({ password: PASSWORD, withoutBrookProtocol: flag }) !== null).toBe(mode.preparable);
    expect(mode.prepareClientKey({ password: PASSWORD }) !== null).toBe(mode.preparable);
  });

  it.each([['brook', BROOK_MODE], ['withoutBrookProtocol', WOB_MODE]] as const)('one %s credential serves many tunnels and is never written to', (_name, mode) => {
    const credential = passwordCredential(PASSWORD);
    const before = Buffer.concat([credential.password, credential.passwordHash]);
    expect(credential.passwordHash.equals(createHash('sha256').update(PASSWORD).digest())).toBe(true);
    for (let i = 0; i < 3; i++) {
      const c = mode.clientCodec({ password: PASSWORD, network: 'udp', destination: DST, now });
      const s = mode.serverCodec(credential, { now });
      expect(s.push(c.hello(), () => undefined)).not.toBeNull();
      const back: Buffer[] = [];
      c.push(Buffer.concat([s.accept(), s.seal(Buffer.from('reply'))]), (p) => back.push(p));
      expect(Buffer.concat(back).toString()).toBe('reply');
    }
    expect(Buffer.concat([credential.password, credential.passwordHash]).equals(before)).toBe(true);
    // another password's credential refuses the same client
    const c = mode.clientCodec({ password: PASSWORD, network: 'tcp', destination: DST, now });
    const other = mode.serverCodec(passwordCredential('another'), { now });
    expect(codeOf(() => other.push(c.hello(), () => undefined))).toBe(mode === BROOK_MODE ? ErrorCodes.AUTH_FAILED : ErrorCodes.WOB_PASSWORD);
  });
});
