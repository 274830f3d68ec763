#!/usr/bin/env bash
# Blue/green releases of Zeta on Kubernetes (deploy/README.md, "Blue/green").
#
# Two Deployments, zeta-blue and zeta-green, run side by side; the Service `zeta` selects one
# colour. A release goes to the idle colour, is waited for until every pod is ready, and only
# then does the Service's selector move to it. The colour left behind keeps running, so a
# rollback is one selector patch away.
#
#   bluegreen.sh status                      which colour takes traffic; both colours' images
#   bluegreen.sh switch <blue|green> [IMAGE] migrate with IMAGE (if new), deploy it to that
#                                            (idle) colour, wait for it, move Service and HPA
#   bluegreen.sh rollback                    move the Service and the HPA back to the colour
#                                            the last switch left (scaled up again if retired)
#   bluegreen.sh migrate IMAGE               run the migration Job with IMAGE and wait for it
#   bluegreen.sh retire                      scale the idle colour to zero (no rollback after
#                                            this without a scale-up, which rollback does)
#   bluegreen.sh render <blue|green|migrate> IMAGE
#                                            print that manifest with IMAGE (no cluster needed)
#
# Without IMAGE, `switch` redeploys the image the target colour already runs (or, if it does
# not exist yet, the active colour's image). Either way the target colour gets fresh pods, so
# that changes to the manifest, the ConfigMap or the Secret go through blue/green too.
#
# Environment: KUBECTL (default "kubectl"; may carry flags, e.g. "kubectl --context prod"),
# NAMESPACE (default: the context's), ROLLOUT_TIMEOUT (default 300s), MIGRATE_TIMEOUT_SECS
# (default 600), SKIP_MIGRATE=1 (do not run the migration Job on switch).
#
# Exit status: 0 done, 1 refused or failed (traffic then stays where it was), 2 usage.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBECTL="${KUBECTL:-kubectl}"
NAMESPACE="${NAMESPACE:-}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-300s}"
MIGRATE_TIMEOUT_SECS="${MIGRATE_TIMEOUT_SECS:-600}"
SKIP_MIGRATE="${SKIP_MIGRATE:-0}"

readonly APP=zeta SERVICE=zeta HPA=zeta JOB=zeta-migrate CONTAINER=zeta
readonly PREVIOUS_ANNOTATION=zeta.bluegreen/previous-color

log() { echo "bluegreen: $*" >&2; }
die() {
    echo "bluegreen: error: $*" >&2
    exit 1
}
usage() {
    sed -n '/^#   bluegreen.sh status/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

kc() {
    local -a cmd
    read -r -a cmd <<<"$KUBECTL"
    if [[ -n "$NAMESPACE" ]]; then
        cmd+=(--namespace "$NAMESPACE")
    fi
    "${cmd[@]}" "$@"
}

check_color() {
    [[ "$1" == blue || "$1" == green ]] || die "colour must be blue or green, not '$1'"
}

other() {
    if [[ "$1" == blue ]]; then echo green; else echo blue; fi
}

max() {
    local best=$1 n
    shift
    for n in "$@"; do
        if ((n > best)); then best=$n; fi
    done
    echo "$best"
}

# The colour the Service sends traffic to.
active_color() {
    local color
    color="$(kc get service "$SERVICE" -o 'jsonpath={.spec.selector.color}')" ||
        die "cannot read Service $SERVICE (apply deploy/k8s/service.yaml first)"
    check_color "$color"
    echo "$color"
}

# The colour the last switch or rollback moved away from (empty if none recorded).
previous_color() {
    kc get service "$SERVICE" -o "jsonpath={.metadata.annotations.${PREVIOUS_ANNOTATION//./\\.}}"
}

deployment_exists() {
    kc get deployment "$APP-$1" >/dev/null 2>&1
}

hpa_exists() {
    kc get hpa "$HPA" >/dev/null 2>&1
}

image_of() {
    kc get deployment "$APP-$1" \
        -o "jsonpath={.spec.template.spec.containers[?(@.name==\"$CONTAINER\")].image}"
}

replicas_of() {
    local n
    n="$(kc get deployment "$APP-$1" -o 'jsonpath={.spec.replicas}')"
    echo "${n:-0}"
}

ready_of() {
    local n
    n="$(kc get deployment "$APP-$1" -o 'jsonpath={.status.readyReplicas}')"
    echo "${n:-0}"
}

hpa_min() {
    local n=1
    if hpa_exists; then
        n="$(kc get hpa "$HPA" -o 'jsonpath={.spec.minReplicas}')"
    fi
    echo "${n:-1}"
}

# Prints a manifest with its one container image replaced.
render() {
    local file=$1 image=$2 count
    [[ "$image" =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]] || die "not an image reference: '$image'"
    [[ -f "$file" ]] || die "no such manifest: $file"
    count="$(grep -cE '^[[:space:]]*image:[[:space:]]' "$file" || true)"
    [[ "$count" == 1 ]] || die "$file must have exactly one 'image:' line, it has $count"
    sed -E "s#^([[:space:]]*image:[[:space:]]*).*\$#\\1${image}#" "$file"
}

manifest_of() {
    case "$1" in
        blue | green) echo "$HERE/deployment-$1.yaml" ;;
        migrate) echo "$HERE/migrate-job.yaml" ;;
        *) die "no manifest named '$1' (blue, green or migrate)" ;;
    esac
}

# Points the Service (and the HPA) at `to`, remembering `from` for rollback.
point_traffic() {
    local to=$1 from=$2
    kc patch service "$SERVICE" --type merge -p "{
        \"metadata\": {\"annotations\": {\"$PREVIOUS_ANNOTATION\": \"$from\"}},
        \"spec\": {\"selector\": {\"app\": \"$APP\", \"color\": \"$to\"}}
    }" >/dev/null
    log "Service $SERVICE now selects color=$to (was $from)"
    if hpa_exists; then
        kc patch hpa "$HPA" --type merge -p "{
            \"spec\": {\"scaleTargetRef\": {
                \"apiVersion\": \"apps/v1\", \"kind\": \"Deployment\", \"name\": \"$APP-$to\"}}
        }" >/dev/null
        log "HPA $HPA now scales $APP-$to ($APP-$from keeps its $(replicas_of "$from") replicas)"
    else
        log "no HPA $HPA: nothing to retarget"
    fi
}

# Scales `color` up to at least `want` replicas and waits until all of them are ready.
# Returns 1 (having said why) when they are not ready in time.
ensure_ready() {
    local color=$1 want=$2 have ready
    have="$(replicas_of "$color")"
    if ((have < want)); then
        log "scaling $APP-$color from $have to $want replicas"
        kc scale deployment "$APP-$color" --replicas="$want" >/dev/null
    fi
    if ! kc rollout status deployment "$APP-$color" --timeout="$ROLLOUT_TIMEOUT"; then
        log "$APP-$color did not become ready within $ROLLOUT_TIMEOUT" \
            "(kubectl describe deployment $APP-$color; kubectl logs deployment/$APP-$color)"
        return 1
    fi
    ready="$(ready_of "$color")"
    if ((ready < want)); then
        log "$APP-$color has $ready ready pods of $want"
        return 1
    fi
}

cmd_migrate() {
    local image=$1 deadline complete failed
    log "running migrations with $image"
    kc delete job "$JOB" --ignore-not-found --wait=true >/dev/null
    render "$(manifest_of migrate)" "$image" | kc apply -f - >/dev/null
    deadline=$((SECONDS + MIGRATE_TIMEOUT_SECS))
    while ((SECONDS < deadline)); do
        # A failed read (API hiccup) is retried until the deadline.
        complete="$(kc get job "$JOB" -o 'jsonpath={.status.conditions[?(@.type=="Complete")].status}' || true)"
        failed="$(kc get job "$JOB" -o 'jsonpath={.status.conditions[?(@.type=="Failed")].status}' || true)"
        if [[ "$complete" == True ]]; then
            log "migrations applied"
            return 0
        fi
        if [[ "$failed" == True ]]; then
            kc logs "job/$JOB" --tail=50 >&2 || true
            die "migration Job $JOB failed; nothing was switched"
        fi
        sleep 3
    done
    die "migration Job $JOB did not finish within ${MIGRATE_TIMEOUT_SECS}s; nothing was switched"
}

cmd_switch() {
    local target=$1 image=${2:-} active active_image want existed old_image migrate
    check_color "$target"
    active="$(active_color)"
    [[ "$target" != "$active" ]] ||
        die "$target already takes the traffic; deploy to $(other "$active") instead"

    active_image="$(image_of "$active" 2>/dev/null || true)"
    # Migrations run only for an explicitly given new image: a reused (older) image must not
    # run its migrations against a newer schema.
    migrate=no
    if [[ -n "$image" && "$image" != "$active_image" && "$SKIP_MIGRATE" != 1 ]]; then
        migrate=yes
    fi
    if [[ -z "$image" ]]; then
        if deployment_exists "$target"; then
            image="$(image_of "$target")"
        else
            image="$active_image"
        fi
    fi
    [[ -n "$image" ]] || die "no IMAGE given and none to reuse"
    log "switch: $active ($active_image) -> $target ($image)"

    if [[ "$migrate" == yes ]]; then
        cmd_migrate "$image"
    fi

    existed=no old_image=""
    if deployment_exists "$target"; then
        existed=yes
        old_image="$(image_of "$target")"
    fi
    render "$(manifest_of "$target")" "$image" | kc apply -f -
    if [[ "$existed" == yes && "$old_image" == "$image" ]]; then
        # Same image: new pods anyway, so that they read the current ConfigMap and Secret.
        kc rollout restart deployment "$APP-$target" >/dev/null
    fi
    want="$(max 1 "$(hpa_min)" "$(replicas_of "$active")")"
    if ! ensure_ready "$target" "$want"; then
        if [[ "$existed" == yes ]]; then
            # Keep the idle colour what it was, so that it stays a valid rollback target.
            log "restoring $APP-$target to its previous revision"
            kc rollout undo deployment "$APP-$target" >/dev/null || true
        fi
        die "switch to $target abandoned; traffic stays on $active"
    fi
    point_traffic "$target" "$active"
    log "done. $APP-$active still runs: 'bluegreen.sh rollback' moves traffic back," \
        "'bluegreen.sh retire' scales it to zero."
}

cmd_rollback() {
    local active previous want
    active="$(active_color)"
    previous="$(previous_color)"
    [[ -n "$previous" ]] || previous="$(other "$active")"
    check_color "$previous"
    [[ "$previous" != "$active" ]] || die "nothing to roll back: the previous colour is $active"
    deployment_exists "$previous" || die "no Deployment $APP-$previous to roll back to"
    log "rollback: $active ($(image_of "$active")) -> $previous ($(image_of "$previous"))"
    want="$(max 1 "$(hpa_min)" "$(replicas_of "$active")")"
    ensure_ready "$previous" "$want" || die "rollback abandoned; traffic stays on $active"
    point_traffic "$previous" "$active"
}

cmd_retire() {
    local idle
    idle="$(other "$(active_color)")"
    if deployment_exists "$idle"; then
        kc scale deployment "$APP-$idle" --replicas=0 >/dev/null
        log "$APP-$idle scaled to 0 (rollback will scale it up again before moving traffic)"
    else
        log "no $APP-$idle to retire"
    fi
}

cmd_status() {
    local active previous color
    active="$(active_color)"
    previous="$(previous_color)"
    echo "Service $SERVICE -> color=$active (previous: ${previous:-none})"
    if hpa_exists; then
        kc get hpa "$HPA" -o 'jsonpath=HPA {.metadata.name} -> {.spec.scaleTargetRef.name} (min {.spec.minReplicas}, max {.spec.maxReplicas}, current {.status.currentReplicas}){"\n"}'
    else
        echo "HPA $HPA: absent"
    fi
    for color in blue green; do
        if deployment_exists "$color"; then
            printf '%-5s %-6s replicas=%s ready=%s image=%s\n' "$color" \
                "$([[ "$color" == "$active" ]] && echo LIVE || echo idle)" \
                "$(replicas_of "$color")" "$(ready_of "$color")" "$(image_of "$color")"
        else
            printf '%-5s absent\n' "$color"
        fi
    done
}

main() {
    local command=${1:-}
    shift || true
    case "$command" in
        status) [[ $# -eq 0 ]] || usage; cmd_status ;;
        switch) [[ $# -ge 1 && $# -le 2 ]] || usage; cmd_switch "$@" ;;
        rollback) [[ $# -eq 0 ]] || usage; cmd_rollback ;;
        migrate) [[ $# -eq 1 ]] || usage; cmd_migrate "$1" ;;
        retire) [[ $# -eq 0 ]] || usage; cmd_retire ;;
        render) [[ $# -eq 2 ]] || usage; render "$(manifest_of "$1")" "$2" ;;
        *) usage ;;
    esac
}

main "$@"
