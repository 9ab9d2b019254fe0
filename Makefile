# A thin wrapper over CMake for the README's two commands.
#   make demo   install what is missing, build, train a small GLA on the fortune files on
#               the CPU for a few minutes, then generate text from it
#   make demo-recipes   run every recipe on the CPU and print a table (the former demo)
#   make test   install what is missing, build, run every test (plain and ASan/UBSan)

BUILD ?= build
SAN_BUILD ?= build-san
JOBS ?= $(shell nproc)

# install-deps provides hipRTC on x86-64 (Debian's ROCm): there, tests/test_hip.c
# must compile every HIP kernel rather than skip.
export FLA_REQUIRE_HIPRTC := $(if $(filter x86_64,$(shell uname -m)),1,)

.PHONY: all deps build demo demo-recipes test test-plain test-san clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	bash scripts/demo-train.sh $(BUILD)

demo-recipes: build
	$(BUILD)/fla-bench --demo

test-plain: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-san: deps
	cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFLA_SANITIZE=ON >/dev/null
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && FLA_TEST_QUICK=1 ASAN_OPTIONS=detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

test: test-plain test-san

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
