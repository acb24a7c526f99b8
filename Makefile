# brook-ts. `make run` and `make test` work on a fresh machine (they install what they need).
.PHONY: install deps build native typecheck test run bench fuzz soak attack pack clean

NODE_MODULES := node_modules/.package-lock.json

$(NODE_MODULES): package.json package-lock.json
	npm ci --no-audit --no-fund

install: $(NODE_MODULES)

# Debian packages used by the tests (pebble, curl, openssl, python3, haproxy, nginx, systemd-analyze, redis-server, a C toolchain)
deps:
	bash .ci/test-deps.sh

# tsc (dist/src: the library; dist/cmd: a working unbundled CLI), then esbuild replaces dist/cmd/brook-ts.js
# with one file plus lazily loaded chunks (dist/cmd/chunks/): ~7 MiB less idle RSS per process (package.json "bundle")
build: install
	npm run --silent build

# the optional AES-GCM addon; without a compiler node:crypto is used (CI: strict)
native: install
	node native/build.mjs $(if $(BROOK_TS_NATIVE_STRICT),--strict,)

typecheck: install
	npx tsc -p tsconfig.test.json

test: deps build native typecheck
	npx vitest run --reporter=default --reporter=json --outputFile=test-results.json; rc=$$?; \
	  node -e 'const r=require("./test-results.json");console.log(`tests: $${r.numPassedTests} passed, $${r.numFailedTests} failed`)'; \
	  exit $$rc

run: build native
	bash cmd/run-local.sh

bench: build native
	npx tsx bench/run.ts

# hostile tools, not in CI (minutes each); ARGS passes flags, e.g. make soak ARGS='--minutes 1'
fuzz: build native
	npx tsx bench/fuzz.ts $(ARGS)

soak: build native
	npx tsx bench/soak.ts $(ARGS)

attack: build native
	npx tsx bench/attack.ts $(ARGS)

# the npm tarball with the prebuilt addon for this platform (prepack: tsc + native/prebuild.mjs)
pack: install
	npm pack

clean:
	rm -rf dist native/build prebuilds
