#!/usr/bin/env bash
# Provisions the local control plane's binaries (etcd, kube-apiserver, kube-controller-manager
# v1.20.2) from Debian's own packages into $CAPSTAN_ENVTEST_DIR. Called by `cargo xtask envtest`.
#
# Why Go 1.15: built with Go >= 1.18 the v1.20 apiserver compiles but crashes (SIGSEGV in the
# vendored reflect2) as soon as a custom resource is created.
# Why a private apt list: the machine's apt configuration stays untouched, and the mirror is taken
# from it, so no mirror host is written into the repository.
set -euo pipefail

dest=${CAPSTAN_ENVTEST_DIR:?set CAPSTAN_ENVTEST_DIR to the cache dir for the binaries}
work=${CAPSTAN_ENVTEST_WORK:-$dest/../build}
kube_version=v1.20.2
mkdir -p "$dest" "$work"
dest=$(cd "$dest" && pwd)
work=$(cd "$work" && pwd)

log() { printf '[envtest %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "provisioning from Debian packages needs root (apt-get install rsync); or set KUBEBUILDER_ASSETS"
command -v apt-get >/dev/null || die "not a Debian machine: install setup-envtest and set KUBEBUILDER_ASSETS, and build kube-controller-manager v1.20 yourself"

mirror() {
  local uri=""
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
  printf '%s' "${uri%/}"
}

apt_dir=$work/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
m=$(mirror)
cat >"$apt_dir/sources.list" <<LIST
deb-src [signed-by=$keyring] $m bookworm main
deb [signed-by=$keyring] $m bullseye main
deb [signed-by=$keyring] $m bookworm main
LIST
apt_private=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Get::List-Cleanup=0")

if ! command -v rsync >/dev/null; then
  log "installing rsync (the Kubernetes build needs it)"
  apt-get -qq update >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y rsync >/dev/null
fi

log "apt update (private list: bookworm deb-src, bullseye)"
apt-get -qq "${apt_private[@]}" update

# etcd from bookworm, unpacked rather than installed so no service is started.
if [ ! -x "$dest/etcd" ]; then
  log "etcd-server"
  mkdir -p "$work/debs" && (cd "$work/debs" && apt-get -qq "${apt_private[@]}" download etcd-server/bookworm)
  rm -rf "$work/etcd" && dpkg -x "$work"/debs/etcd-server_*.deb "$work/etcd"
  install -m 0755 "$work/etcd/usr/bin/etcd" "$dest/etcd"
fi

goroot=$work/go115/usr/lib/go-1.15
if [ ! -x "$goroot/bin/go" ]; then
  log "Go 1.15 (bullseye golang-1.15-go, golang-1.15-src)"
  mkdir -p "$work/debs" && (cd "$work/debs" && apt-get -qq "${apt_private[@]}" download golang-1.15-go/bullseye golang-1.15-src/bullseye)
  rm -rf "$work/go115"
  for deb in "$work"/debs/golang-1.15-*.deb; do dpkg -x "$deb" "$work/go115"; done
  [ -x "$goroot/bin/go" ] || die "Go 1.15 not found at $goroot after unpacking"
fi

src=$work/src
tree=$src/kubernetes
if [ ! -f "$tree/Makefile" ]; then
  log "kubernetes source (bookworm)"
  rm -rf "$src" && mkdir -p "$src"
  (cd "$src" && apt-get -qq "${apt_private[@]}" source --download-only kubernetes)
  orig=$(ls "$src"/kubernetes_*.orig.tar.* | head -n1)
  mkdir -p "$tree" && tar -xf "$orig" -C "$tree" --strip-components=1
fi

log "building kube-apiserver and kube-controller-manager with Go 1.15 (about 5 minutes on 2 cores)"
gopath=$work/gopath
mkdir -p "$gopath/src/k8s.io"
ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"
(
  cd "$gopath/src/k8s.io/kubernetes"
  export GOROOT=$goroot PATH=$goroot/bin:$PATH GOPATH=$gopath GO111MODULE=off CGO_ENABLED=0
  export GOFLAGS= GOCACHE=$work/gocache
  export KUBE_GIT_VERSION=$kube_version KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1 ||
    { tail -n 40 "$work/build.log" >&2; die "kubernetes build failed (log: $work/build.log)"; }
)
for b in kube-apiserver kube-controller-manager; do
  built=$(find "$tree/_output" -type f -name "$b" -perm -u+x | head -n1)
  [ -n "$built" ] || die "$b not found under $tree/_output after the build"
  install -m 0755 "$built" "$dest/$b"
done
log "done: $(ls "$dest" | tr '\n' ' ')in $dest"
