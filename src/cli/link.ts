/**
 * `link`: a brook:// link from a server URL, a password and the link options, written
 * as upstream writes it (src/link.ts); the one function that maps the flags is linkOptions.
 */
import type { Command } from 'commander';
import { buildLink, linkKindForServer, type LinkOptions, parseServerUrl } from '../link.js';
import { EXAMPLE_FLAGS, PASSWORD_FILE_HELP, readPem, withPasswordSources } from './common.js';
import { addFlags, flag, type FlagValues, toggle } from './flags.js';
import type { GlobalFlags } from './globals.js';

const LINK_FLAGS = {
  ...EXAMPLE_FLAGS,
  server: flag('-s, --server <url>', 'ws://1.2.3.4:9999 or wss://domain.com:443/ws', { required: true }),
  password: flag('-p, --password <password>', 'password (default: empty)'),
  passwordFile: flag('--passwordFile <file>', PASSWORD_FILE_HELP),
  username: flag('-u, --username <username>', 'username'),
  name: flag('--name <name>', 'give this server a name'),
  address: flag('--address <host:port>', 'dial this address instead of resolving the host of the server'),
  insecure: toggle('--insecure', "client does not verify the server's certificate chain and host name"),
  ca: flag('--ca <file>', 'embed this CA (PEM) in the link'),
  withoutBrookProtocol: toggle('--withoutBrookProtocol', 'the data will not be encrypted with brook protocol'),
  // global options too: read with optsWithGlobals, whichever side of the command they are on
  clientHKDFInfo: flag('--clientHKDFInfo <info>', 'HKDF info for the client to server direction'),
  serverHKDFInfo: flag('--serverHKDFInfo <info>', 'HKDF info for the server to client direction'),
};

export type LinkFlags = FlagValues<typeof LINK_FLAGS>;

/** The link's options from the flags (absent ones are left out of the link). */
export function linkOptions(f: LinkFlags): LinkOptions {
  return {
    address: f.address,
    insecure: f.insecure ? true : undefined,
    ca: f.ca ? readPem(f.ca, 'CA file') : undefined,
    withoutBrookProtocol: f.withoutBrookProtocol ? true : undefined,
    clientHKDFInfo: f.clientHKDFInfo,
    serverHKDFInfo: f.serverHKDFInfo,
    name: f.name,
    username: f.username,
  };
}

export function addLinkCommand(program: Command): void {
  const cmd = addFlags(program.command('link').description('Generate a brook link'), LINK_FLAGS);
  withPasswordSources(cmd, 'link').action((_o: unknown, c: Command) => {
    const f = c.optsWithGlobals<LinkFlags & GlobalFlags>();
    const kind = linkKindForServer(f.server);
    parseServerUrl(kind, f.server);
    process.stdout.write(buildLink(kind, f.server, f.password ?? '', linkOptions(f)) + '\n');
  });
}
