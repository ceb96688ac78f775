#!/bin/sh
# Harness proof for the vm label: the guest kernel gives us a working dm-thin
# pool on loop files, a thin volume, ext4 on it, and a clean teardown.
# It drives dmsetup directly because it tests the kernel, not stepsnap.
set -eu

work=$(mktemp -d /tmp/thin-smoke.XXXXXX)
pool=smoke-pool-$$
thin=smoke-thin-$$
data_loop="" meta_loop=""
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
  dmsetup remove "$thin" 2>/dev/null || true
  dmsetup remove "$pool" 2>/dev/null || true
  [ -n "$data_loop" ] && losetup -d "$data_loop" 2>/dev/null
  [ -n "$meta_loop" ] && losetup -d "$meta_loop" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "smoke: $*"; }

step "loop files"
truncate -s 256M "$work/data"
truncate -s 16M "$work/meta"
data_loop=$(losetup --find --show "$work/data")
meta_loop=$(losetup --find --show "$work/meta")
dd if=/dev/zero of="$meta_loop" bs=4096 count=1 status=none

step "thin pool on $data_loop + $meta_loop"
sectors=$(blockdev --getsz "$data_loop")
dmsetup create "$pool" --table "0 $sectors thin-pool $meta_loop $data_loop 128 0 1 skip_block_zeroing"
dmsetup mknodes "$pool"
dmsetup status "$pool" | grep -q thin-pool

step "thin volume"
dmsetup message "$pool" 0 "create_thin 0"
dmsetup create "$thin" --table "0 262144 thin /dev/mapper/$pool 0"
dmsetup mknodes "$thin"
test -b "/dev/mapper/$thin"

step "mkfs.ext4, mount, write, read back"
mkfs.ext4 -q "/dev/mapper/$thin"
mkdir "$work/mnt"
mount "/dev/mapper/$thin" "$work/mnt"
echo "stepsnap harness" > "$work/mnt/hello"
sync
umount "$work/mnt"
mount -o ro "/dev/mapper/$thin" "$work/mnt"
test "$(cat "$work/mnt/hello")" = "stepsnap harness"
umount "$work/mnt"

step "teardown"
dmsetup remove "$thin"
dmsetup message "$pool" 0 "delete 0"
dmsetup remove "$pool"
losetup -d "$data_loop"; data_loop=""
losetup -d "$meta_loop"; meta_loop=""
! dmsetup info "$pool" >/dev/null 2>&1
step "ok"
