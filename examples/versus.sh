#!/usr/bin/env bash
# Builds passgate and the webauthn-rs actix tutorial server ("the demo")
# and measures them side by side with examples/versus.rs (issue 21):
#
#   examples/versus.sh [--db sqlite|postgres] [--rounds 3] [--logins 4000] ...
#
# The demo is the webauthn-rs repository's tutorial/server/actix_web at
# release v0.5.2, built in a scratch folder under target/versus (never
# committed):
#   1. a clone of $WEBAUTHN_RS_GIT (default: https://github.com/kanidm/webauthn-rs.git;
#      any clone or mirror of it will do, such as a local bare repository),
#      checked out at the tag $WEBAUTHN_RS_TAG (default v0.5.2);
#   2. its workspace cut down to the tutorial server alone (other members
#      depend on crates fetched from GitHub by git, such as bluetooth-hci,
#      which a machine without access to github.com cannot fetch; the
#      tutorial needs none of them);
#   3. `cargo build --release -p actix_tutorial` in that clone (the
#      repository has no Cargo.lock: cargo resolves the newest compatible
#      crates, which is what a newcomer building the tutorial gets), with
#      RUSTFLAGS=--cap-lints=warn: webauthn-rs-core says #![deny(warnings)],
#      and newer compilers warn about code that 0.5.2's compiler did not;
#   4. an empty tutorial/wasm/pkg folder: the demo refuses to start without
#      its browser bundle, which the benchmark never asks for; it is run
#      from tutorial/server/actix_web, where it finds ../../wasm/pkg.
# The demo listens on 0.0.0.0:8080 (fixed in its source), so that port must
# be free. Every other flag goes to examples/versus.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

repo=${WEBAUTHN_RS_GIT:-https://github.com/kanidm/webauthn-rs.git}
tag=${WEBAUTHN_RS_TAG:-v0.5.2}
scratch=target/versus/webauthn-rs
if [ ! -d "$scratch/.git" ]; then
  mkdir -p target/versus
  git clone --quiet "$repo" "$scratch"
fi
git -C "$scratch" checkout --quiet --force "$tag"
perl -0pi -e 's/members = \[.*?\]/members = ["tutorial\/server\/actix_web"]/s' "$scratch/Cargo.toml"
(cd "$scratch" && RUSTFLAGS=--cap-lints=warn cargo build --release --quiet -p actix_tutorial)
mkdir -p "$scratch/tutorial/wasm/pkg"
demo_dir="$scratch/tutorial/server/actix_web"
demo_bin="$(cd "$scratch" && pwd)/target/release/actix_tutorial"

cargo build --release --quiet --bin passgate --example versus
exec target/release/examples/versus --demo "$demo_bin" --demo-dir "$demo_dir" "$@"
