# AutoSafe sandbox wrapper: runs INSIDE the bubblewrap sandbox as `sh -c WRAPPER autosafe CMD`.
# Protocol (see bwrap.rs):
#   stdin  : a tar archive restored onto / (persisted roots, fake tools, setup staging)
#   stdout : the command's merged stdout+stderr
#   stderr : report lines `rc N`, `left PID CMDLINE`, then a line `tar`, then a tar of the
#            persisted roots (the state after the command). When those roots hold more than
#            AUTOSAFE_MAX_FILES entries, a line `too-many-files MAX` comes first and the tar
#            holds the sinks alone, or no `tar` line follows if the sinks are over it too.
# Limits come from the environment of this script (AUTOSAFE_*), which is removed before the
# command runs.
set -u
if ! tar -x -p --no-same-owner -C / -f - 2>/tmp/.autosafe-restore.err; then
  printf 'restore-failed %s\n' "$(head -c 300 /tmp/.autosafe-restore.err | tr '\n' ' ')" >&2
  exit 90
fi
rm -f /tmp/.autosafe-restore.err
cd "$HOME" 2>/dev/null || cd /
t=$AUTOSAFE_TIMEOUT cpu=$AUTOSAFE_CPU as=$AUTOSAFE_AS np=$AUTOSAFE_NPROC fs=$AUTOSAFE_FSIZE nf=$AUTOSAFE_NOFILE sh_=$AUTOSAFE_SHELL
mf=$AUTOSAFE_MAX_FILES mi=$AUTOSAFE_MAX_INODES
unset AUTOSAFE_TIMEOUT AUTOSAFE_CPU AUTOSAFE_AS AUTOSAFE_NPROC AUTOSAFE_FSIZE AUTOSAFE_NOFILE AUTOSAFE_SHELL AUTOSAFE_MAX_FILES AUTOSAFE_MAX_INODES
# Every file costs the host about 1 KB of kernel memory that no tmpfs size bounds, and bwrap
# cannot set nr_inodes: this shell, pid 1, which nothing inside can kill, watches the inodes in
# use on every writable filesystem and kills all the rest once the command has made more than
# AUTOSAFE_MAX_INODES (the restored state, at most max_files, is not counted).
writable="/etc /opt /tmp $HOME /srv /var/spool/outbound /dev/shm"
# shellcheck disable=SC2086
inodes() { echo "$(($(stat -f --printf '%c-%d+' $writable 2>/dev/null) 0))"; }
base=$(inodes)
# A background command starts with SIGINT and SIGQUIT ignored (sh without job control): reset.
ds=
env --default-signal=INT true 2>/dev/null && ds='env --default-signal=INT,QUIT'
# shellcheck disable=SC2086
$ds prlimit --cpu="$cpu" --as="$as" --nproc="$np" --fsize="$fs" --nofile="$nf" --core=0 -- \
  timeout -k 1 "$t" "$sh_" -c "$1" </dev/null 2>&1 &
cpid=$!
# Short commands are the most: look often at first, so that they end without waiting.
nap=0.005
while :; do
  read -r _ _ st _ 2>/dev/null </proc/$cpid/stat || break
  [ "$st" = Z ] && break
  made=$(($(inodes) - base))
  if [ "$made" -gt "$mi" ]; then
    kill -KILL -1 2>/dev/null
    printf '\nautosafe: %s files and directories made, over the limit of %s: the command was killed\n' \
      "$made" "$mi"
    break
  fi
  sleep "$nap"
  case $nap in 0.005) nap=0.01 ;; 0.01) nap=0.02 ;; *) nap=0.05 ;; esac
done
wait "$cpid"
rc=$?
printf 'rc %s\n' "$rc" >&2
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  if [ "$pid" = 1 ] || [ "$pid" = $$ ]; then continue; fi
  [ -r "$p/cmdline" ] || continue
  c=$(tr '\0\n' '  ' <"$p/cmdline" 2>/dev/null)
  [ -n "$c" ] && printf 'left %s %s\n' "$pid" "$c" >&2
done
# Reported, they end here rather than with this shell: nothing unwatched makes files while the
# state is counted and saved, and the state saved is the one counted.
kill -KILL -1 2>/dev/null
# Entries under the roots, counted as a stream that stops one past the cap: a command's
# millions of files are never listed in full, here or on the host.
entries() { find "$@" -print0 2>/dev/null | tr -cd '\000' | head -c "$((mf + 1))" | wc -c; }
cd / || exit 91
roots='home/user srv var/spool/outbound'
# shellcheck disable=SC2086
if [ "$(($(entries $roots)))" -gt "$mf" ]; then
  printf 'too-many-files %s\n' "$mf" >&2
  # The sinks (what was sent out) are evidence for the checkers: keep them if they fit.
  roots=var/spool/outbound
  [ "$(($(entries $roots)))" -gt "$mf" ] && exit 0
fi
printf 'tar\n' >&2
# shellcheck disable=SC2086
exec tar -c -f - --numeric-owner $roots >&2
