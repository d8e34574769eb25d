# AutoSafe sandbox wrapper: runs INSIDE the bubblewrap sandbox as `sh -c WRAPPER autosafe CMD`.
# Protocol (see bwrap.rs):
#   stdin  : a tar archive restored onto / (persisted roots, fake tools, setup staging)
#   stdout : the command's merged stdout+stderr
#   stderr : report lines `rc N`, `left PID CMDLINE`, then a line `tar`, then a tar of the
#            persisted roots (the state after the command).
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
unset AUTOSAFE_TIMEOUT AUTOSAFE_CPU AUTOSAFE_AS AUTOSAFE_NPROC AUTOSAFE_FSIZE AUTOSAFE_NOFILE AUTOSAFE_SHELL
prlimit --cpu="$cpu" --as="$as" --nproc="$np" --fsize="$fs" --nofile="$nf" --core=0 -- \
  timeout -k 1 "$t" "$sh_" -c "$1" </dev/null 2>&1
rc=$?
printf 'rc %s\n' "$rc" >&2
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  if [ "$pid" = 1 ] || [ "$pid" = $$ ]; then continue; fi
  [ -r "$p/cmdline" ] || continue
  c=$(tr '\0\n' '  ' <"$p/cmdline" 2>/dev/null)
  [ -n "$c" ] && printf 'left %s %s\n' "$pid" "$c" >&2
done
printf 'tar\n' >&2
cd / && exec tar -c -f - --numeric-owner home/user srv var/spool/outbound >&2
