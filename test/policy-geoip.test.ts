/**
 * --blockGeoIP with the shipped database (@ip-location-db/geo-whois-asn-country-mmdb).
 * Addresses chosen for countries that do not move: 8.8.8.8 and 2001:4860:4860::8888
 * (Google, US), 114.114.114.114 (114DNS, CN), 193.0.6.139 (RIPE NCC, NL).
 */
import { describe, expect, it } from 'vitest';
import { makeAddress } from '../src/protocol/address.js';
import { loadCountryLookup, normalizeCountryCodes } from '../src/policy/geoip.js';
import { DestinationPolicy } from '../src/policy/policy.js';

describe('GeoIP', () => {
  it('the shipped database knows the countries of stable addresses (IPv4, IPv6)', async () => {
    const country = await loadCountryLookup();
    expect(country('8.8.8.8')).toBe('US');
    expect(country('114.114.114.114')).toBe('CN');
    expect(country('193.0.6.139')).toBe('NL');
    expect(country('2001:4860:4860::8888')).toBe('US');
    expect(country('127.0.0.1')).toBeNull();
    expect(country('not an ip')).toBeNull();
  });

  it('blocks destinations of the listed countries only, mapped and resolved ones too', async () => {
    const p = await DestinationPolicy.load({
      blockGeoIP: ['cn', 'US'],
      resolve: async (h) => (h === 'google.test' ? ['8.8.8.8'] : ['193.0.6.139']),
    });
    try {
      expect(p!.sizes().geoip).toEqual(['CN', 'US']);
      expect(await p!.check(makeAddress('114.114.114.114', 53))).toEqual({ rule: 'geoip:CN' });
      expect(await p!.check(makeAddress('8.8.8.8', 53))).toEqual({ rule: 'geoip:US' });
      expect(await p!.check(makeAddress('::ffff:8.8.8.8', 53))).toEqual({ rule: 'geoip:US' });
      expect(await p!.check(makeAddress('2001:4860:4860::8888', 53))).toEqual({ rule: 'geoip:US' });
      expect(await p!.check(makeAddress('google.test', 443))).toEqual({ rule: 'geoip:US', ip: '8.8.8.8' });
      expect(await p!.check(makeAddress('193.0.6.139', 443))).toBeNull();
      expect(await p!.evaluate(makeAddress('ripe.test', 443))).toEqual({ blocked: false, ips: ['193.0.6.139'] });
    } finally {
      p?.close();
    }
  });

  it('country codes are validated and upper-cased', () => {
    expect(normalizeCountryCodes(['us', 'US', 'Cn'])).toEqual(['US', 'CN']);
    expect(() => normalizeCountryCodes(['U'])).toThrow(/two-letter/);
  });
});
