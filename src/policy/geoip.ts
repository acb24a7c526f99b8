/**
 * --blockGeoIP CC: the country of a destination IP, from an offline MMDB
 * database read with mmdb-lib (MIT).
 *
 * Default database: the npm package @ip-location-db/geo-whois-asn-country-mmdb
 * (package licence CC0-1.0; its data is derived from the RIRs' whois and
 * ASN data, CC BY 4.0 by the NRO: attribute "nro.net"). Both are compatible
 * with GPL-3.0. The GeoLite2-based packages (geoip-country,
 * @ip-location-db/geolite2-country-mmdb) were measured as equally fast but
 * carry MaxMind's GeoLite2 EULA, which binds every operator who installs us.
 * Any MMDB country database can be given instead (geoipDatabase): records of
 * the form {country_code} (ip-location-db) and {country: {iso_code}} (MaxMind)
 * are both read.
 *
 * The module and the 7.8 MB database are loaded only when --blockGeoIP is
 * given (dynamic import). Upstream uses github.com/phuslu/iploc (IP2Location
 * LITE data, compiled in) and compares codes case-sensitively; here codes are
 * upper-cased, so `cn` works too.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { BrookError, ErrorCodes } from '../errors.js';

export const DEFAULT_GEOIP_PACKAGE = '@ip-location-db/geo-whois-asn-country-mmdb';
export const DEFAULT_GEOIP_FILE = 'geo-whois-asn-country.mmdb';

/** Country of an IP text (IPv4 dotted or IPv6), upper-case ISO 3166-1 alpha-2, or null. */
export type CountryLookup = (ip: string) => string | null;

/** Validate and upper-case --blockGeoIP values. Throws CONFIG for anything but two letters. */
export function normalizeCountryCodes(codes: readonly string[]): string[] {
  const out = new Set<string>();
  for (const c of codes) {
    if (!/^[A-Za-z]{2}$/.test(c)) {
      throw new BrookError(ErrorCodes.CONFIG, `--blockGeoIP wants a two-letter country code (like US), not ${JSON.stringify(c)}`);
    }
    out.add(c.toUpperCase());
  }
  return [...out];
}

/** Where the default database file is. */
export function defaultGeoIPDatabase(): string {
  const require = createRequire(import.meta.url);
  const pkg = require.resolve(`${DEFAULT_GEOIP_PACKAGE}/package.json`);
  return pkg.slice(0, -'package.json'.length) + DEFAULT_GEOIP_FILE;
}

interface CountryRecord {
  country_code?: string;
  country?: { iso_code?: string };
  registered_country?: { iso_code?: string };
}

/** Load an MMDB country database. Throws GEOIP_UNAVAILABLE with a one-line message. */
export async function loadCountryLookup(database?: string): Promise<CountryLookup> {
  let path = database;
  try {
    path ??= defaultGeoIPDatabase();
  } catch (e) {
    throw new BrookError(ErrorCodes.GEOIP_UNAVAILABLE, `GeoIP database package ${DEFAULT_GEOIP_PACKAGE} is not installed`, {
      cause: e,
    });
  }
  let reader: { get(ip: string): unknown };
  try {
    const [{ Reader }, db] = await Promise.all([import('mmdb-lib'), readFile(path)]);
    reader = new Reader(db);
  } catch (e) {
    throw new BrookError(ErrorCodes.GEOIP_UNAVAILABLE, `cannot load GeoIP database ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  return (ip) => {
    let r: CountryRecord | null;
    try {
      r = reader.get(ip) as CountryRecord | null;
    } catch {
      return null; // not an IP
    }
    if (!r) return null;
    const cc = r.country_code ?? r.country?.iso_code ?? r.registered_country?.iso_code;
    return typeof cc === 'string' ? cc.toUpperCase() : null;
  };
}
