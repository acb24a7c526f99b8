/**
 * --dialWithNIC: Node.js cannot bind a socket to a device (SO_BINDTODEVICE),
 * but upstream does not either: it binds the source address to an address of
 * the named interface, looked up at every dial. We do the same:
 *
 *   IPv4 destination: the first global unicast, non-private IPv4 of the NIC,
 *                     else the first global unicast private one;
 *   IPv6 destination: the first global unicast IPv6 of the NIC.
 *
 * "Global unicast" as Go's net.IP.IsGlobalUnicast: not unspecified, loopback,
 * multicast, link-local or the IPv4 broadcast address. Private: 10/8,
 * 172.16/12, 192.168/16, fc00::/7. As with upstream, the kernel still picks the
 * outgoing interface from the routing table (source-based routing rules make
 * it follow the address).
 */
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { BrookError, ErrorCodes } from '../errors.js';
import { isIPv4, isIPv6, parseIPv6 } from '../protocol/address.js';

export type InterfaceLister = () => NodeJS.Dict<NetworkInterfaceInfo[]>;

export const systemInterfaces: InterfaceLister = networkInterfaces;

/** The source address to use on `nic` for a destination of `family`; throws NETWORK_UNREACHABLE when there is none. */
export function nicSourceAddress(nic: string, family: 4 | 6, list: InterfaceLister = systemInterfaces): string {
  const addrs = list()[nic];
  if (!addrs) throw new BrookError(ErrorCodes.NETWORK_UNREACHABLE, `dialWithNIC: no network interface named ${JSON.stringify(nic)}`);
  const picked = pickNicAddress(addrs.map((a) => a.address), family);
  if (!picked) throw new BrookError(ErrorCodes.NETWORK_UNREACHABLE, `dialWithNIC: no global IPv${family} address on ${nic}`);
  return picked;
}

/** Upstream's choice among a NIC's addresses (see the file comment). Pure. */
export function pickNicAddress(addresses: readonly string[], family: 4 | 6): string | null {
  if (family === 6) {
    return addresses.find((a) => isIPv6(a) && !isIPv4Mapped(a) && isGlobalUnicast6(a)) ?? null;
  }
  const v4 = addresses.filter((a) => isIPv4(a) && isGlobalUnicast4(a));
  return v4.find((a) => !isPrivate4(a)) ?? v4.find((a) => isPrivate4(a)) ?? null;
}

function octets(a: string): number[] {
  return a.split('.').map(Number);
}

export function isGlobalUnicast4(a: string): boolean {
  const [o1 = 0, o2 = 0] = octets(a);
  if (a === '0.0.0.0' || a === '255.255.255.255') return false;
  if (o1 === 127) return false; // loopback
  if (o1 >= 224 && o1 <= 239) return false; // multicast
  if (o1 === 169 && o2 === 254) return false; // link-local
  return true;
}

export function isPrivate4(a: string): boolean {
  const [o1 = 0, o2 = 0] = octets(a);
  return o1 === 10 || (o1 === 172 && o2 >= 16 && o2 <= 31) || (o1 === 192 && o2 === 168);
}

function isIPv4Mapped(a: string): boolean {
  const b = parseIPv6(a.split('%')[0]!);
  return b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
}

export function isGlobalUnicast6(a: string): boolean {
  const b = parseIPv6(a.split('%')[0]!);
  if (b.every((x) => x === 0)) return false; // ::
  if (b.subarray(0, 15).every((x) => x === 0) && b[15] === 1) return false; // ::1
  if (b[0] === 0xff) return false; // multicast
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return false; // fe80::/10 link-local
  return true;
}
