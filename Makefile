# The two commands a user needs: `make run` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help run stop test unit lint bench chaos compose-test clean

help:
	@echo "make run    install what is missing, start PostgreSQL, Redis, Kafka and the three services"
	@echo "make stop   stop everything 'make run' started"
	@echo "make test   unit and integration tests against real PostgreSQL, Redis and Kafka"
	@echo "make unit   unit tests only (no servers)"
	@echo "make lint   ruff"
	@echo "make bench  parse/serialize, PUBLISH latency under load, NOTIFY fan-out delay and NOTIFYs/s with 1 and 3 notifiers,"
	@echo "            then the same load side by side with Kamailio 5.6 (installs it from Debian; docs/PERFORMANCE.md),"
	@echo "            then again with 10k and 100k stored presentities and subscriptions (docs/perf/scale.md)"
	@echo "            (BENCH_PARTS=parse,publish,fanout,dialog,throughput,compare,overload,scale; knobs in scripts/bench.sh)"
	@echo "make chaos  fault suite: SIGKILL and restart each service and PostgreSQL, Redis, Kafka under"
	@echo "            SIP load; checks nothing is lost and prints a table (own servers, var/chaos)"
	@echo "make compose-test  verify docker-compose.yml here: local stand-in images, up, test profile, --scale notifier=3, down"

run:
	@scripts/stack.sh up

stop:
	@scripts/stack.sh down

test:
	@scripts/test.sh

unit:
	@scripts/venv.sh
	@.venv/bin/python -m pytest -q tests/unit

lint:
	@scripts/venv.sh
	@.venv/bin/ruff check lib services tools tests bench

bench:
	@scripts/bench.sh

chaos:
	@scripts/chaos.sh

compose-test:
	@scripts/compose-test.sh

clean: stop
	rm -rf var
