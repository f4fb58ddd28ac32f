# Installs streetwatch where a Debian operator expects it (README "Install (Debian)"):
#
#   cargo build --release --locked && sudo make install            # PREFIX=/usr/local
#   make install DESTDIR=/tmp/stage PREFIX=/usr                      # staged, e.g. for a package
#
#   $(PREFIX)/bin/streetwatch
#   $(PREFIX)/lib/streetwatch/libonnxruntime.so.1.31.1              ONNX Runtime (scripts/setup.sh fetches it)
#   $(PREFIX)/share/streetwatch/{models,pipelines,fixtures}          model, templates, demo and bench footage
#   $(PREFIX)/lib/systemd/system/streetwatch.service, $(PREFIX)/lib/sysusers.d/streetwatch.conf
#   $(SYSCONFDIR)/streetwatch/                                       the configuration (not overwritten)
#
# The binary finds the rest from its own location (src/home.rs), never from the working directory.

PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR ?=
BIN ?= target/release/streetwatch
ORT_LIB ?= .deps/onnxruntime/libonnxruntime.so.1.31.1

BINDIR := $(PREFIX)/bin
LIBDIR := $(PREFIX)/lib/streetwatch
SHAREDIR := $(PREFIX)/share/streetwatch
UNITDIR := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d

INSTALL ?= install
DATA := $(INSTALL) -m 0644

.PHONY: build install uninstall

build:
	cargo build --release --locked

install:
	@test -x "$(BIN)" || { echo "make install: $(BIN) missing: cargo build --release --locked first" >&2; exit 1; }
	@test -f "$(ORT_LIB)" || { echo "make install: $(ORT_LIB) missing: run scripts/setup.sh first" >&2; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(SHAREDIR)/models $(DESTDIR)$(SHAREDIR)/pipelines \
		$(DESTDIR)$(SHAREDIR)/fixtures/footage $(DESTDIR)$(SHAREDIR)/fixtures/scenarios/known_limits \
		$(DESTDIR)$(SHAREDIR)/fixtures/alert
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/streetwatch
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/streetwatch
	$(DATA) $(ORT_LIB) $(DESTDIR)$(LIBDIR)/
	$(DATA) models/*.onnx models/*.toml models/README.md $(DESTDIR)$(SHAREDIR)/models/
	$(DATA) pipelines/*.pipeline pipelines/*.toml $(DESTDIR)$(SHAREDIR)/pipelines/
	$(DATA) fixtures/README.md $(DESTDIR)$(SHAREDIR)/fixtures/
	$(DATA) fixtures/footage/* $(DESTDIR)$(SHAREDIR)/fixtures/footage/
	$(DATA) fixtures/scenarios/*.toml fixtures/scenarios/*.mp4 $(DESTDIR)$(SHAREDIR)/fixtures/scenarios/
	$(DATA) fixtures/scenarios/known_limits/* $(DESTDIR)$(SHAREDIR)/fixtures/scenarios/known_limits/
	$(DATA) fixtures/alert/* $(DESTDIR)$(SHAREDIR)/fixtures/alert/
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SHAREDIR@|$(SHAREDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		packaging/streetwatch.service > $(DESTDIR)$(UNITDIR)/streetwatch.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/streetwatch.service
	$(DATA) packaging/streetwatch.sysusers $(DESTDIR)$(SYSUSERSDIR)/streetwatch.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/streetwatch $(DESTDIR)$(UNITDIR)/streetwatch.service \
		$(DESTDIR)$(SYSUSERSDIR)/streetwatch.conf
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(SHAREDIR)
