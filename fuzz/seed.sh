#!/usr/bin/env bash
# Builds fuzz/corpus/<target>/ from the schema fixtures (schemas/fixtures/**) and the small
# hand-written seeds in fuzz/seeds/<target>/. Only adds files (named by the SHA-1 of their
# content, as libFuzzer names its own), so it is safe to rerun over a corpus a run has grown.
# Needs jq and sha1sum.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fixtures=$(dirname "$here")/schemas/fixtures
corpus=$here/corpus
targets=(envelope queue_message delivery_message entity_classify codec_decode stream_record webhook_headers domain)

# add TARGET: stores stdin as one corpus entry of TARGET (nothing when stdin is empty).
add() {
    local tmp
    tmp=$(mktemp "$corpus/.seed.XXXXXX")
    cat >"$tmp"
    if [[ -s $tmp ]]; then
        mv -f "$tmp" "$corpus/$1/$(sha1sum <"$tmp" | cut -c1-40)"
    else
        rm -f "$tmp"
    fi
}

# json FILES...: the fixtures under the given directories that jq can read.
json() { find "$@" -name '*.json' -type f 2>/dev/null | sort; }

mkdir -p "$corpus"
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t"
    if [[ -d $here/seeds/$t ]]; then
        for f in "$here/seeds/$t"/*; do [[ -f $f ]] && add "$t" <"$f"; done
    fi
done

envelopes=$(json "$fixtures/submission-envelope")
queue=$(json "$fixtures/queue-submission")
queue_valid=$(json "$fixtures/queue-submission/valid")

for f in $envelopes; do
    add envelope <"$f"
    # The body as the webhook_headers target takes it: signed with the site's current secret.
    { printf 'webhook-id: msg_%s\nwebhook-timestamp: now\nwebhook-signature: {sign}\n\n' "$(basename "$f" .json)"; cat "$f"; } |
        add webhook_headers
    # Raw payloads for the codec: mode 1 (encode), codec 1-3, quality 5, threshold 0.
    for pick in 1 2 3; do { printf "\\x01\\x0${pick}\\x05\\x00"; cat "$f"; } | add codec_decode; done
    jq -j '.site | strings' "$f" 2>/dev/null | add domain || true
    jq -j '.site | strings | "SITE#\(.)\nSITE"' "$f" 2>/dev/null | add entity_classify || true
done

for f in $queue; do
    add queue_message <"$f"
    jq -j '.site | strings' "$f" 2>/dev/null | add domain || true
done

for f in $queue_valid; do
    # Keys of the submission and its tenant.
    jq -j '"SUB#\(.tenant_id)#000\nSUB#\(.submission_id)"' "$f" | add entity_classify
    jq -j '"TENANT#\(.tenant_id)\nPROFILE"' "$f" | add entity_classify
    # A delivery message for it, the stored payload inline (identity codec).
    jq -c '{v: 2, tenant: .tenant_id, shard: 0, submission: .submission_id,
            destination: "01JDQ7R2C8M4V6X0B3N5P7Q9SA", attempt: 1, due_ms: 0, form_id: .form_id,
            expires_at: .expires_at,
            sub: {site: .site, form_id: .form_id, received_at: .received_at,
                  raw_size: (.payload | tojson | length), codec: "id", payload: (.payload | tojson | @base64)}}' "$f" |
        add delivery_message
    # Its stored item (layout 1, identity codec) arriving on the stream.
    jq -c '{Records: [{eventID: "1", eventName: "INSERT", awsRegion: "us-east-1", eventSource: "aws:dynamodb",
            dynamodb: {ApproximateCreationDateTime: 1764900000.0, SequenceNumber: "100", SizeBytes: 100,
                       Keys: {PK: {S: "SUB#\(.tenant_id)#000"}, SK: {S: "SUB#\(.submission_id)"}},
                       NewImage: {PK: {S: "SUB#\(.tenant_id)#000"}, SK: {S: "SUB#\(.submission_id)"},
                                  site: {S: .site}, form_id: {S: .form_id}, received_at: {S: .received_at},
                                  ttl: {N: (.expires_at | tostring)}, raw_size: {N: (.payload | tojson | length | tostring)},
                                  codec: {S: "id"}, payload: {B: (.payload | tojson | @base64)}}}}]}' "$f" |
        add stream_record
done

# Legacy site addresses (URLs and bare hosts, hostile ones included) for the domain target.
if [[ -f $fixtures/legacy-auth/wp-auth-200.json ]]; then
    jq -r '.[].site_url | strings' "$fixtures/legacy-auth/wp-auth-200.json" | sort -u | while IFS= read -r url; do
        printf '%s' "$url" | add domain
    done
fi

for t in "${targets[@]}"; do
    printf '%-18s %5d inputs\n' "$t" "$(find "$corpus/$t" -type f | wc -l)"
done
