/** Destination policy: block lists, GeoIP and the local rules, checked per new tunnel / flow (see policy.ts). */
export {
  ALLOWED,
  DestinationPolicy,
  defaultResolver,
  MAX_UPDATE_INTERVAL_S,
  type DestinationPolicyOptions,
  type PolicyVerdict,
  type ReloadOutcome,
  type Resolver,
} from './policy.js';
export { LOCAL_ADDRESS_REFRESH_MS } from './local.js';
export { parseInetAton } from './ipforms.js';
export { DEFAULT_LIST_FETCH_TIMEOUT_MS, DEFAULT_MAX_LIST_BYTES, describeSource } from './lists.js';
