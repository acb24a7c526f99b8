/**
 * Many users on one server (issue 19, protocol/users.md): the users file, the key lookup, the try
 * order and trial budget, the accounting state file, and the `users` command's logic.
 */
export * from './atomic.js';
export * from './budget.js';
export * from './command.js';
export * from './file-edit.js';
export * from './file.js';
export * from './keytable.js';
export * from './load.js';
export * from './lookup-js.js';
export * from './lookup.js';
export * from './native.js';
export * from './order.js';
export * from './state.js';
export * from './units.js';
export * from './userset.js';
