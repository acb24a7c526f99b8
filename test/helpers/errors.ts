/** The code of the BrookError that `f` throws (fails the test when it throws something else or nothing). */
import { expect } from 'vitest';
import { BrookError, type ErrorCode } from '../../src/errors.js';

export function brookCode(f: () => unknown): ErrorCode {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BrookError);
    return (e as BrookError).code;
  }
  throw new Error('expected a BrookError, nothing was thrown');
}
