#!/usr/bin/env bash
# A deploy with corral: fetch the new code, check that it boots, reload, and
# fail loudly (with the traceback) when it does not come up, while the old
# generation keeps serving.
#
#   integration/deploy.sh APP_DIR [CORRAL_CONFIG]
#
# APP_DIR is a git checkout of the app (corral's [app] chdir); CORRAL_CONFIG
# is the running corral's config file (default: APP_DIR/corral.toml). Set
# CORRAL to the corral binary (default: corral on PATH) and GIT_REF to the
# ref to deploy (default: the upstream of the current branch).
set -euo pipefail

app_dir=${1:?usage: deploy.sh APP_DIR [CORRAL_CONFIG]}
config=${2:-$app_dir/corral.toml}
corral=${CORRAL:-corral}

cd "$app_dir"
before=$(git rev-parse --short=12 HEAD)
git fetch --quiet origin
ref=${GIT_REF:-}
[ -n "$ref" ] || ref='@{upstream}'
git merge --quiet --ff-only "$ref"
after=$(git rev-parse --short=12 HEAD)
echo "deploy: $before -> $after"

# 1. Does the new code boot at all (imports, start-up, readiness)?
if ! "$corral" check -c "$config"; then
    echo "deploy: $after does not boot; nothing was reloaded, $before keeps serving" >&2
    git reset --quiet --hard "$before"
    exit 1
fi

# 2. Reload and wait: the new generation takes over only when it is all in
#    service; otherwise corral keeps the old one and says why.
status=0
"$corral" reload --wait -c "$config" || status=$?
if [ "$status" -eq 3 ]; then
    # corral is stopping (systemctl stop or restart): the new code did not
    # fail, and the next start runs it.
    echo "deploy: corral stopped during the reload; $after stays checked out" >&2
    exit 3
elif [ "$status" -eq 4 ]; then
    # A failed reload's rollback was under way: this one did not start
    # and $before keeps serving. Run the deploy again once it has ended.
    echo "deploy: corral was busy and did not start this reload; $before keeps serving" >&2
    git reset --quiet --hard "$before"
    exit 4
elif [ "$status" -ne 0 ]; then
    echo "deploy: reload to $after failed; $before keeps serving" >&2
    git reset --quiet --hard "$before"
    exit 1
fi
echo "deploy: $after is in service"
