/**
 * The brook-ts command line: upstream Brook's command and flag names, short aliases and
 * defaults for wsserver, wsclient, wssserver, wssclient, link and connect. A mistake is one
 * line on stderr and a non-zero exit.
 *
 * Layout (each family: a flag table, and one function from its flags to the library's options):
 *   flags.ts    flag tables, typed (commander's opts<T>()), and the parsers
 *   common.ts   what the families share: timeouts, --crypto/--shutdownGrace/--workers, passwords
 *   globals.ts  the global options (--log, --prometheus, --dialWith*, --block*)
 *   servers.ts  wsserver, wssserver -> WsServerOptions / WssServerOptions (src/server/)
 *   clients.ts  wsclient, wssclient, connect -> WsClientOptions (src/client/)
 *   link.ts     link -> a brook:// link (src/link.ts)
 *   runtime.ts  the process around a command: log, pid, metrics, dialer, signals, --workers
 * Nothing under src/server or src/client imports from here.
 */
import { Command } from 'commander';
import { BrookError } from '../errors.js';
import { addClientCommands } from './clients.js';
import { addGlobalOptions } from './globals.js';
import { addLinkCommand } from './link.js';
import { addServerCommands } from './servers.js';

export { DEFAULT_SHUTDOWN_GRACE_SECONDS } from './common.js';

export const VERSION = '0.1.0';

const EXAMPLES: Record<string, string> = {
  wsserver: 'brook-ts wsserver --listen :9999 --password hello',
  wsclient: 'brook-ts wsclient --wsserver ws://1.2.3.4:9999 --password hello --socks5 127.0.0.1:1080',
  wssserver: 'brook-ts wssserver --domainaddress domain.com:443 --password hello',
  wssclient: 'brook-ts wssclient --wssserver wss://domain.com:443/ws --password hello --socks5 127.0.0.1:1080',
  link: 'brook-ts link --server ws://1.2.3.4:9999 --password hello',
  connect: "brook-ts connect --link 'brook://wsserver?password=hello&wsserver=ws%3A%2F%2F1.2.3.4%3A9999' --socks5 127.0.0.1:1080",
};

export function buildProgram(): Command {
  const program = new Command('brook-ts')
    .description("Brook's WebSocket mode for Node.js, wire-compatible with upstream Brook")
    .version(VERSION)
    .showSuggestionAfterError(true)
    // commander's errors (and its "(Did you mean ...?)" hint) as one line, like ours: "brook-ts: ..."
    .configureOutput({ outputError: (str, write) => write(`brook-ts: ${str.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')}\n`) });
  addGlobalOptions(program);
  addServerCommands(program);
  addClientCommands(program);
  addLinkCommand(program);
  return program;
}

/** Entry point: runs the program; a BrookError becomes one line on stderr and exit code 1. */
export async function main(argv: string[] = process.argv): Promise<void> {
  const command = argv[2];
  if (command && argv.slice(3).includes('--example') && EXAMPLES[command]) {
    process.stdout.write(EXAMPLES[command] + '\n');
    return;
  }
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    const msg = e instanceof BrookError ? e.message : (e as Error)?.message ?? String(e);
    const sys = (e as NodeJS.ErrnoException)?.code;
    process.stderr.write(`brook-ts: ${sys === 'EADDRINUSE' ? 'address already in use: ' : ''}${msg.split('\n')[0]}\n`);
    process.exit(1);
  }
}
