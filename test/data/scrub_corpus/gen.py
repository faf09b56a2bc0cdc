#!/usr/bin/env python3
"""Writes the scrubber's measurement corpus: tune.txt and heldout.txt.

Real-looking log lines, each with either planted secrets (every one must be
gone after scrubbing) or benign look-alikes (every one must be left as it
is). Every value is drawn from a seeded PRNG; none is real. Each template
makes several lines; the lines are shuffled and dealt into two halves with
a fixed seed: tune.txt (rules may be developed against it) and heldout.txt
(only measured). Format, one record a line, TAB-separated, escapes \\\\ \\t
\\n \\r:
    S <TAB> LINE <TAB> SECRET [<TAB> SECRET ...]     (secrets to remove)
    B <TAB> LINE <TAB> VALUE [<TAB> VALUE ...]       (benign values to keep)

    python3 test/data/scrub_corpus/gen.py test/data/scrub_corpus
    SCRUB_CORPUS_SEED=424242 python3 test/data/scrub_corpus/gen.py /tmp/fresh
      (a corpus no rule has seen: bench_scrub /tmp/fresh)
"""
import base64, hashlib, json, os, random, sys, uuid

SEED = int(os.environ.get("SCRUB_CORPUS_SEED", "7081"))
R = random.Random(SEED)
UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LO = "abcdefghijklmnopqrstuvwxyz"
DG = "0123456789"
AN = UP + LO + DG
HEX = "0123456789abcdef"
B64 = AN + "+/"
B64U = AN + "-_"
PUNCT = "!#$%&*+=?@^~;,.:-_"


def rs(chars, n):
    return "".join(R.choice(chars) for _ in range(n))


def b64(nbytes):
    return base64.b64encode(bytes(R.getrandbits(8) for _ in range(nbytes))).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def password():
    n = R.randint(10, 20)
    return R.choice(AN) + rs(AN + "!#$%^*-_+=~.@/", n - 2) + R.choice(AN)


def punct_password():
    """A password that begins with punctuation."""
    n = R.randint(9, 18)
    return R.choice("&!#$%*^~@;,") + rs(AN, 2) + rs(AN + "!#$%^*&;,-_+=~.@", n - 3)


def aws_id():
    return R.choice(["AKIA", "ASIA"]) + rs(UP + DG, 16)


def aws_secret():
    return rs(AN + "/+", 40)


def gh():
    return R.choice(["ghp_", "gho_", "ghs_"]) + rs(AN, 36)


def gh_pat():
    return "github_pat_" + rs(AN, 22) + "_" + rs(AN + "_", 59)


def slack():
    return R.choice(["xoxb-", "xoxp-"]) + "-".join([rs(DG, 12), rs(DG, 13), rs(AN, 24)])


def stripe():
    return R.choice(["sk_live_", "rk_live_", "sk_test_"]) + rs(AN, 24)


def jwt():
    hdr = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    pl = b64url(json.dumps({"sub": str(R.randint(1, 99999)), "exp": R.randint(1.7e9, 1.8e9)},
                           separators=(",", ":")).encode())
    return f"{hdr}.{pl}.{rs(B64U, 43)}"


def pem():
    kind = R.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    body = "\n".join(b64(48) for _ in range(R.randint(2, 5)))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----", body.split("\n")


def hexs(n):
    return rs(HEX, n)


def host():
    return R.choice(["db", "db-1.internal", "10.0.3.7", "cache.prod", "mq.example.com"])


def user():
    return R.choice(["app", "admin", "svc_orders", "deploy", "root", "bob"])


SVC = ["orders", "billing", "api", "worker", "auth", "checkout"]


def ts():
    return f"2024-0{R.randint(1, 9)}-1{R.randint(0, 9)}T1{R.randint(0, 9)}:{R.randint(10, 59)}:{R.randint(10, 59)}Z"


def lvl():
    return R.choice(["ERROR", "error", "[error]", "E", "WARN"])


# ------------------------------------------------------------ secret templates
# each returns (line, [secrets])

def s_aws_pair():
    i, s = aws_id(), aws_secret()
    return R.choice([
        f"{ts()} {lvl()} boto: AWS_ACCESS_KEY_ID={i} AWS_SECRET_ACCESS_KEY={s}",
        f"{lvl()} s3 upload failed with access key {i} and secret {s}",
        f"aws configure: access key id {i}, secret access key {s}",
    ]), [i, s]


def s_aws_secret_context():
    s = aws_secret()
    return R.choice([
        f"{lvl()} AWS secret {s} rejected by STS",
        f"using aws secret access key {s} for region eu-west-1",
        f"{ts()} credentials: secret key {s} (profile default)",
        f"the secret is {s}",
        f"S3 client init: secret={s} region=us-east-1",
        f"signing with secret '{s}'",
    ]), [s]


def s_github():
    t = R.choice([gh(), gh_pat()])
    return R.choice([
        f"{lvl()} git clone https://x-access-token:{t}@github.com/acme/api.git failed",
        f"GITHUB_TOKEN={t} gh release create v1.2.3",
        f"{ts()} octokit: HttpError: Bad credentials (token {t})",
    ]), [t]


def s_slack():
    t = slack()
    w = "https://hooks.slack.com/services/T" + rs(UP + DG, 8) + "/B" + rs(UP + DG, 8) + "/" + rs(AN, 24)
    if R.random() < 0.5:
        return f"{lvl()} slack post failed: token {t} invalid_auth", [t]
    return f"{lvl()} webhook {w} returned 404", [w.split("/services/")[1]]


def s_stripe():
    t = stripe()
    return R.choice([
        f"Stripe::AuthenticationError: Invalid API Key provided: {t}",
        f"{lvl()} stripe api_key={t} charge ch_{rs(AN, 14)} failed",
        f"{ts()} payment: using key {t}",
    ]), [t]


def s_jwt():
    t = jwt()
    return R.choice([
        f"{lvl()} JWT verification failed for {t}: expired",
        f"GET /api/orders?access_token={t} 401",
        f"{ts()} session token {t} rejected",
    ]), [t]


def s_pem():
    block, lines = pem()
    return R.choice([
        f"{lvl()} could not load key:\n{block}",
        f"config dump: tls.key={block}",
    ]), lines


def s_url():
    p = R.choice([password(), punct_password(), rs(AN, 12)])
    scheme = R.choice(["postgres", "mysql", "redis", "amqp", "mongodb+srv", "https"])
    return R.choice([
        f"{lvl()} connection to {scheme}://{user()}:{p}@{host()}:5432/app refused",
        f"Ecto: DATABASE_URL={scheme}://{user()}:{p}@{host()}/prod invalid",
    ]), [p]


def s_bearer():
    t = R.choice([rs(AN + "-._~", 40), jwt(), b64(30)])
    return R.choice([
        f"{lvl()} request failed: headers=[{{\"authorization\", \"Bearer {t}\"}}]",
        f"curl -H 'Authorization: Bearer {t}' https://api.example.com/v1/orders",
        f"{ts()} upstream 401 with Authorization: Bearer {t}",
    ]), [t]


def s_punct_password():
    p = punct_password()
    return R.choice([
        f"{lvl()} login failed: password={p} user={user()}",
        f"db: connect(user={user()}, password={p})",
        f"{ts()} ldap bind with password {p} failed",
        f"the password is {p}",
        f"mysql -u {user()} --password={p} -h {host()}",
        f"{lvl()} PGPASSWORD={p} psql exited 2",
        f"redis AUTH {p} -> WRONGPASS",
        f"config: smtp_password: {p}",
    ]), [p]


def s_password():
    p = password()
    return R.choice([
        f"{lvl()} auth failed for {user()} with password {p}",
        f"{{\"user\":\"{user()}\",\"password\":\"{p}\"}}",
        f"{ts()} admin password set to {p}",
        f"login(username: \"{user()}\", password: \"{p}\")",
    ]), [p]


def s_hex_context():
    h = hexs(R.choice([32, 40, 64]))
    return R.choice([
        f"{lvl()} HMAC signing key {h} too short for SHA-512",
        f"webhook secret {h} did not match signature",
        f"{ts()} api token: {h}",
        f"using client secret {h}",
        f"{lvl()} invalid api key {h}",
        f"encryption key = {h}",
        f"auth token {h} revoked",
        f"credential {h} expired",
    ]), [h]


def s_b64_context():
    k = b64(R.choice([24, 32, 48]))
    return R.choice([
        f"{lvl()} encryption key {k} has wrong length",
        f"secret_key_base: {k}",
        f"{ts()} master key is {k}",
        f"auth credential {k} refused by upstream",
        f"session secret {k} rotated",
        f"token {k} not found in store",
    ]), [k]


def s_generic_token_prose():
    t = rs(AN, R.randint(24, 48))
    return R.choice([
        f"{lvl()} refresh token {t} was revoked",
        f"invalid access token {t}",
        f"{ts()} API key {t} exceeded quota",
        f"X-Api-Key: {t}",
        f"apikey {t} denied",
    ]), [t]


SECRET_TEMPLATES = [
    (s_aws_pair, 14), (s_aws_secret_context, 22), (s_github, 14), (s_slack, 12),
    (s_stripe, 12), (s_jwt, 12), (s_pem, 8), (s_url, 16), (s_bearer, 14),
    (s_punct_password, 28), (s_password, 16), (s_hex_context, 24), (s_b64_context, 20),
    (s_generic_token_prose, 18),
]

# ------------------------------------------------------------ benign templates
# each returns (line, [values that must stay])


def b_sha():
    h = hexs(40)
    return R.choice([
        f"{ts()} deployed commit {h} to production",
        f"{lvl()} build failed at sha {h}",
        f"revision {h} not found",
    ]), [h]


def b_sha_short():
    h = hexs(40)
    line = R.choice([f"git checkout {h[:12]} failed", f"release built from {h[:7]}"])
    return line, [h[:12] if "checkout" in line else h[:7]]


def b_uuid():
    u = str(uuid.UUID(int=R.getrandbits(128), version=4))
    return R.choice([
        f"{lvl()} request {u} failed after 3 retries",
        f"order_id={u} not found",
        f"{ts()} user {u} logged in",
        f"key not found: {u}",
        f"trace {u} exceeded deadline",
    ]), [u]


def b_request_id():
    r = R.choice(["req_" + rs(AN, 16), rs(HEX, 16), "01" + rs(UP + DG, 24)])
    return R.choice([
        f"request_id={r} status=500",
        f"{lvl()} x-request-id: {r} upstream timeout",
        f"{ts()} [{r}] Ecto.NoResultsError",
    ]), [r]


def b_hash_named():
    h = R.choice([hashlib.sha256(rs(AN, 8).encode()).hexdigest(),
                  hashlib.md5(rs(AN, 8).encode()).hexdigest()])
    return R.choice([
        f"checksum mismatch: expected sha256 {h}",
        f"{lvl()} md5 hash {h} differs",
        f"etag \"{h}\" stale",
        f"file digest={h}",
        f"content hash: {h}",
    ]), [h]


def b_base64_data():
    d = base64.b64encode(R.choice([b"hello world", b"{\"a\":1}", b"ping", b"order created"])).decode()
    return R.choice([
        f"payload={d} rejected",
        f"{lvl()} could not decode body {d}",
        f"data: {d}",
    ]), [d]


def b_words():
    line = R.choice([
        "keyboard layout us not available",
        "token count 5 exceeds limit 4",
        "max_tokens=4096 reached",
        "tokenizer failed on input",
        "password reset email sent to user 42",
        "secret santa assignment failed",
        "primary key violation on table orders",
        "api key missing from request",
        "the token has expired",
        "authorization failed for user 17",
        "credential provider chain exhausted",
        "session expired after 3600s",
        "auth failed: invalid username or password",
        "key order_status not in schema",
        "password_length must be at least 12",
        "token_count=1200 prompt_tokens=900",
        "secret rotation scheduled at 2024-05-01T10:00:00Z",
        "cache key user:1234:profile missing",
        "Invalid token: signature mismatch",
        "turkey sandwich out of stock",
    ])
    return line, [line]


def b_versions():
    v = R.choice(["v1.14.2", "1.2.3-rc.1", "OTP-25.3.2", "node@18.17.0"])
    return R.choice([f"running {v}", f"upgrade to {v} failed"]), [v]


def b_frames():
    line = R.choice([
        "    (my_app 0.1.0) lib/my_app/worker.ex:42: MyApp.Worker.handle_call/3",
        "  at com.acme.billing.InvoiceService.charge(InvoiceService.java:118)",
        "  File \"/srv/app/tasks.py\", line 77, in run",
        "    at Object.<anonymous> (/srv/app/index.js:12:5)",
    ])
    return line, [line.strip()]


def b_misc_ids():
    v = R.choice([f"ch_{rs(AN, 24)}", f"cus_{rs(AN, 14)}", f"i-{rs(HEX, 17)}", f"sg-{rs(HEX, 8)}",
                  f"arn:aws:iam::{rs(DG, 12)}:role/deploy"])
    return R.choice([f"{lvl()} resource {v} not found", f"processing {v}"]), [v]


BENIGN_TEMPLATES = [
    (b_sha, 16), (b_sha_short, 8), (b_uuid, 18), (b_request_id, 14), (b_hash_named, 18),
    (b_base64_data, 12), (b_words, 40), (b_versions, 6), (b_frames, 8), (b_misc_ids, 12),
]


def esc(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    recs = []
    for fn, n in SECRET_TEMPLATES:
        for _ in range(n):
            line, secrets = fn()
            recs.append("S\t" + esc(line) + "\t" + "\t".join(esc(s) for s in secrets))
    for fn, n in BENIGN_TEMPLATES:
        for _ in range(n):
            line, vals = fn()
            recs.append("B\t" + esc(line) + "\t" + "\t".join(esc(v) for v in vals))
    R.shuffle(recs)
    half = len(recs) // 2
    header = "# generated by test/data/scrub_corpus/gen.py (seed %d); do not edit\n" % SEED
    with open(os.path.join(out, "tune.txt"), "w") as f:
        f.write(header + "\n".join(recs[:half]) + "\n")
    with open(os.path.join(out, "heldout.txt"), "w") as f:
        f.write(header + "\n".join(recs[half:]) + "\n")


main()
