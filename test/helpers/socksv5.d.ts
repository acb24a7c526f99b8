/** Minimal types for the `socksv5` npm package (an independent SOCKS5 server used by test/dial-socks5.test.ts). */
declare module 'socksv5' {
  import type { Server } from 'node:net';
  export interface ConnectionInfo {
    cmd: string;
    srcAddr: string;
    srcPort: number;
    dstAddr: string;
    dstPort: number;
  }
  export interface AuthHandler {
    METHOD: number;
  }
  export interface SocksServer extends Server {
    // listen/close/address come from net.Server (the package forwards them)
    useAuth(auth: AuthHandler): this;
  }
  export function createServer(
    onConnection: (info: ConnectionInfo, accept: (intercept?: boolean) => unknown, deny: () => void) => void,
  ): SocksServer;
  export const auth: {
    None(): AuthHandler;
    UserPassword(check: (user: string, password: string, cb: (ok: boolean) => void) => void): AuthHandler;
  };
}
