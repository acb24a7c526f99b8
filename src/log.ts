/**
 * One JSON object per line, like upstream's `--log console`:
 *   {"time":"2026-11-22T03:00:00.000Z","from":"127.0.0.1:50000","dst":"example.com:443","network":"tcp","error":"..."}
 */
export type LogEntry = Record<string, unknown>;
export type Logger = (entry: LogEntry) => void;

export function createLogger(write: (line: string) => void = (l) => process.stdout.write(l)): Logger {
  return (entry) => {
    write(JSON.stringify({ time: new Date().toISOString(), ...entry }) + '\n');
  };
}

export const silentLogger: Logger = () => {};
