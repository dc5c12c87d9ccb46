# outboxd: make builds bin/, make check runs the TAP suite, make demo runs the story.
PKGS     := libpq rdkafka libevent inih jansson
CC       ?= cc
WARN     := -Wall -Wextra -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes \
            -Wpointer-arith -Wundef -Wno-format-truncation -Werror
CFLAGS   ?= -O2 -g
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS  = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(PKG_CFLAGS) -Icommon -MMD -MP
LDLIBS      = $(PKG_LIBS) -lm

BUILD ?= build/release
BIN   ?= bin

COMMON  := common/log.c common/conf.c common/crash.c common/db.c common/kafka.c \
           common/util.c
COMMON  += common/outbox_cleanup.c
PROGS   := outboxd outbox-relay outbox-consumer orders outboxctl

SRC_outboxd         := $(wildcard supervisor/*.c)
SRC_outbox-relay    := $(wildcard relay/*.c)
SRC_outbox-consumer := $(wildcard consumer/*.c)
SRC_orders          := $(wildcard orders/*.c)
SRC_outboxctl       := $(wildcard ctl/*.c) $(BUILD)/gen/sql_files.c
# outboxctl dlq applies through the consumer's own code; inbox-sweep shares its sweep.
SRC_outboxctl       += consumer/apply.c consumer/audit.c consumer/dlq.c consumer/sweep.c
# outboxctl status and accept-cluster read and replace the relays' recorded Kafka cluster.
SRC_outboxctl       += relay/cluster.c

UNIT_SRC := $(wildcard tests/t/0*.c)
UNIT_BIN := $(patsubst tests/t/%.c,$(BUILD)/t/%,$(UNIT_SRC))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(patsubst $(BUILD)/%,%,$(1)))

.PHONY: all debug asan deps check check-run check-sanitized unit unit-bins services demo chaos bench clean help
.PHONY: bench-latency
.PHONY: bench-cleanup bench-throughput bench-compare
all: $(addprefix $(BIN)/,$(PROGS))

help:
	@echo "make          build bin/ (outboxd outbox-relay outbox-consumer orders outboxctl)"
	@echo "make check    start the local services and run the TAP suite (prove)"
	@echo "make demo     the crash-injection story end to end on the local services"
	@echo "make chaos    the crash schedule alone (scripts/chaos --help for its options)"
	@echo "make bench-cleanup  claim time as the outbox grows, cleanup on/off; writes during a drop"
	@echo "make bench-throughput  drain rate of one relay and apply rate of one consumer, CPU, RSS"
	@echo "make bench-compare  outboxd beside Debezium's outbox connector, one run, one table (scripts/bench-compare --help)"
	@echo "make debug    ASan/UBSan build into build/debug and bin-debug/, unit tests under it"
	@echo "make check-sanitized  unit tests and a fast integration subset under ASan/UBSan"
	@echo "make bench    the benchmarks (never part of make check)"
	@echo "make bench-latency  commit-to-applied latency per relay mode (scripts/bench-latency --help)"
	@echo "make clean    remove build output"

define prog_rule
$(BIN)/$(1): $(call obj,$(SRC_$(1))) $(call obj,$(COMMON))
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_CFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach p,$(PROGS),$(eval $(call prog_rule,$(p))))

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ictl -c -o $@ $<

# The migrations are compiled into outboxctl so it runs from anywhere.
$(BUILD)/gen/sql_files.c: $(sort $(wildcard sql/*.sql)) scripts/embed-sql
	@mkdir -p $(@D)
	sh scripts/embed-sql $(sort $(wildcard sql/*.sql)) > $@.tmp && mv $@.tmp $@

# Unit tests link the module they test (and common/) directly; no services.
$(BUILD)/t/%: tests/t/%.c $(call obj,$(COMMON)) tests/tap.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests -Irelay -Iconsumer -Isupervisor -Ictl -o $@ $< \
		$(call obj,$(COMMON)) $(UNIT_LINK_$*) $(LDLIBS)

unit: $(UNIT_BIN)
	prove -f $(UNIT_BIN)

# check and demo install what is missing first, then build in a second make
# (the pkg-config flags above are read when make starts).
deps:
	bash scripts/deps

check: deps
	@$(MAKE) --no-print-directory check-run

check-run: all $(UNIT_BIN)
	bash scripts/services up
	prove -f --timer $(UNIT_BIN) $(sort $(wildcard tests/t/1*.t))

SANITIZE := BUILD=build/debug BIN=bin-debug \
            CFLAGS="-O0 -g3 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
debug asan:
	$(MAKE) $(SANITIZE) all unit

# The unit tests and a fast subset of the integration tests against the
# sanitizer build; any ASan/UBSan report fails it (scripts/check-sanitized).
check-sanitized: deps
	@$(MAKE) --no-print-directory $(SANITIZE) all unit-bins
	bash scripts/check-sanitized

unit-bins: $(UNIT_BIN)

services:
	bash scripts/services up

demo: deps
	@$(MAKE) --no-print-directory all
	bash scripts/demo

chaos: deps
	@$(MAKE) --no-print-directory all
	bash scripts/chaos

# Benchmarks: never part of make check. bench runs each of them, one line each.
bench: bench-latency

# e.g. make bench-latency BENCH_LATENCY_ARGS='--modes "poll500 notify" --seconds 10'
bench-latency: deps
	@$(MAKE) --no-print-directory all
	bash scripts/bench-latency $(BENCH_LATENCY_ARGS)

# Claim time as the outbox grows, cleanup on and off; write rate during a
# partition drop (scripts/bench-cleanup --help). Not part of make check.
bench-cleanup: deps
	@$(MAKE) --no-print-directory all
	bash scripts/bench-cleanup
bench: bench-cleanup

# Drain rate of one relay (poll, CDC restart, CDC streaming) and apply rate
# of one consumer on a backlog, with CPU and RSS (scripts/bench-throughput
# --help), e.g. make bench-throughput BENCH_THROUGHPUT_ARGS='--events 50000'.
bench-throughput: deps
	@$(MAKE) --no-print-directory all
	bash scripts/bench-throughput $(BENCH_THROUGHPUT_ARGS)
bench: bench-throughput

# outboxd beside Debezium's outbox connector on the same database and broker:
# writer, drains, consumers, pipeline, latency, producer ceiling, CPU, RSS and
# a perf profile, one table appended to docs/benchmarks.md (scripts/bench-compare
# --help), e.g. make bench-compare BENCH_COMPARE_ARGS='--events 100000 --no-debezium'.
bench-compare: deps
	@$(MAKE) --no-print-directory all
	bash scripts/bench-compare $(BENCH_COMPARE_ARGS)
bench: bench-compare

clean:
	rm -rf build bin bin-debug

-include $(shell find build -name '*.d' 2>/dev/null)
