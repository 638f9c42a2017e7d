# The two commands of the README. Both set up first (idempotent, seconds when done).
CARGO ?= cargo
DEMO_CLIP := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/streamdiff/media/bigbuckbunny.mp4

# Keep wgpu on Vulkan (it otherwise probes GL and logs noise) with a valid runtime dir.
export WGPU_BACKEND ?= vulkan
export XDG_RUNTIME_DIR ?= /tmp/streamdiff-runtime-$(shell id -u)

.PHONY: run test setup lint

setup:
	@mkdir -p "$(XDG_RUNTIME_DIR)" && chmod 700 "$(XDG_RUNTIME_DIR)"
	@bash scripts/setup.sh

run: setup
	$(CARGO) run --release -p streamdiff -- run --input "$(DEMO_CLIP)" --output out/demo.mp4

test: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
