#!/usr/bin/env python3
"""Writes test/c/data/secrets.txt: synthetic secret-bearing log lines.

Every secret is drawn from a seeded PRNG (random.Random(SEED)); none is real.
Card numbers get a computed Luhn check digit. Output format (one record a
line, fields separated by TAB, escapes \\\\ \\t \\n \\r \\0 \\xHH):
    KINDS <TAB> LINE <TAB> SECRET [<TAB> SECRET ...]
KINDS: comma-separated markers that must appear ([REDACTED:kind]).
'@pattern <TAB> ERE' lines configure extra patterns; '#' lines are comments.
"""
import base64, json, random, sys

SEED = 20240605
R = random.Random(SEED)
UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LO = "abcdefghijklmnopqrstuvwxyz"
DG = "0123456789"
AN = UP + LO + DG
B64U = AN + "-_"

def rs(chars, n):
    return "".join(R.choice(chars) for _ in range(n))

def pw(n=None):
    n = n or R.randint(12, 22)
    # no quotes, blanks, , ; & < > ) } ] \ so unquoted values end where expected
    chars = AN + "!#$%^*-_+=~.:@/"
    s = R.choice(AN) + rs(chars, n - 2) + R.choice(AN)
    return s

def luhn_complete(prefix, length):
    body = prefix + rs(DG, length - len(prefix) - 1)
    for d in DG:
        cand = body + d
        total = 0
        for i, ch in enumerate(reversed(cand)):
            v = int(ch)
            if i % 2 == 1:
                v *= 2
                if v > 9:
                    v -= 9
            total += v
        if total % 10 == 0:
            return cand

def group(num, sizes, sep):
    out, p = [], 0
    for s in sizes:
        out.append(num[p:p + s]); p += s
    return sep.join(out)

def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")

def jwt():
    hdr = b64url(json.dumps({"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}, separators=(",", ":")).encode())
    pl = b64url(json.dumps({"sub": str(R.randint(1000, 99999)), "iat": R.randint(1600000000, 1700000000),
                             "role": R.choice(["admin", "user", "service"])}, separators=(",", ":")).encode())
    sig = rs(B64U, 43)
    return f"{hdr}.{pl}.{sig}"

recs = []
def add(kinds, line, *secrets):
    for s in secrets:
        assert s in line, (line, s)
    recs.append((kinds, line, list(secrets)))

def esc(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\": out.append("\\\\")
        elif ch == "\t": out.append("\\t")
        elif ch == "\n": out.append("\\n")
        elif ch == "\r": out.append("\\r")
        elif ch == "\0": out.append("\\0")
        elif o < 0x20 or o == 0x7f: out.append("\\x%02x" % o)
        else: out.append(ch)
    return "".join(out)

ts = lambda: "2024-06-%02dT%02d:%02d:%02d.%03dZ" % (R.randint(1, 28), R.randint(0, 23), R.randint(0, 59), R.randint(0, 59), R.randint(0, 999))

# ---------------------------------------------------------------- AWS
for i in range(8):
    k = R.choice(["AKIA", "ASIA"]) + rs(UP + "234567", 16)
    t = R.choice([
        "botocore.exceptions.ClientError: An error occurred (InvalidAccessKeyId) when calling the PutObject operation: key {k} does not exist",
        "[error] S3 upload failed access_key_id={k} bucket=prod-assets region=eu-west-1",
        "AWS_ACCESS_KEY_ID={k} aws s3 cp ./build s3://acme-assets --recursive exited with 1",
        "{ts} ERROR ExAws request failed: {{:error, {{:http_error, 403, \"SignatureDoesNotMatch for {k}\"}}}}",
        "Credential={k}/20240605/us-east-1/s3/aws4_request rejected: RequestTimeTooSkewed",
    ])
    add("secret" if t.startswith("Credential") else "aws_key", t.format(k=k, ts=ts()), k)
for i in range(4):
    s = rs(AN + "+/", 40)
    add("secret", R.choice(["aws_secret_access_key = {s}", "AWS_SECRET_ACCESS_KEY={s} loaded from .env", "config error: secret_access_key: {s} (expected 40 chars)"]).format(s=s), s)
s1 = "ASIA" + rs(UP + "234567", 16); s2 = rs(AN + "+/", 180)
add("aws_key,secret", f"assume-role ok: AccessKeyId={s1} SessionToken={s2} Expiration=2024-06-05T12:00:00Z", s1, s2)

# ---------------------------------------------------------------- GitHub
for i in range(14):
    kind = R.choice(["ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"])
    tok = kind + (rs(AN, 22) + "_" + rs(AN, 59) if kind == "github_pat_" else rs(AN, 36))
    t = R.choice([
        "remote: Permission to acme/api.git denied to deploy-bot using {t}",
        "{ts} [warning] GitHub API 401 Bad credentials for {t}",
        "Tentacat.Client.new(%{{access_token_value: {t}}}) failed: :unauthorized",
        "gh: HTTP 401: Bad credentials (https://api.github.com/graphql) GH_TOKEN value {t}",
        "fatal: unable to access repository with '{t}': The requested URL returned error: 403",
    ])
    add("github_token", t.format(t=tok, ts=ts()), tok)
for i in range(4):
    tok = "ghp_" + rs(AN, 36)
    add("password", f"fatal: unable to access 'https://x-access-token:{tok}@github.com/acme/api.git/': The requested URL returned error: 403", tok)
for i in range(3):
    tok = "gho_" + rs(AN, 36)
    add("github_token", R.choice(["GITHUB_TOKEN={t} ./scripts/release.sh: line 12: 401", "{{\"token\":\"{t}\",\"scope\":\"repo\"}} rejected", "git config http.extraheader token: {t} failed"]).format(t=tok), tok)

# ---------------------------------------------------------------- GitLab, npm, HF, SendGrid
for i in range(3):
    tok = "glpat-" + rs(B64U, 20)
    add("gitlab_token", f"{ts()} GitLab API error 401 for personal token {tok}", tok)
for i in range(3):
    tok = "npm_" + rs(AN, 36)
    add("npm_token", f"npm ERR! 403 Forbidden - PUT https://registry.npmjs.org/@acme%2fui - using {tok}", tok)
for i in range(3):
    tok = "hf_" + rs(AN, 34)
    add("hf_token", f"huggingface_hub.utils._errors.HfHubHTTPError: 401 Client Error (model acme/llm) with {tok}", tok)
for i in range(3):
    tok = "SG." + rs(B64U, 22) + "." + rs(B64U, 43)
    add("sendgrid_key", f"Swoosh.Adapters.Sendgrid error 403 api key {tok} lacks mail.send", tok)

# ---------------------------------------------------------------- Slack
for i in range(9):
    tok = R.choice(["xoxb-", "xoxp-", "xoxa-", "xoxs-"]) + rs(DG, 12) + "-" + rs(DG, 13) + "-" + rs(AN, 24)
    t = R.choice([
        "slack_sdk.errors.SlackApiError: invalid_auth for {t}",
        "{ts} [error] Slack chat.postMessage failed: not_authed (using {t})",
        "SLACK_BOT_TOKEN={t} is revoked: token_revoked",
    ])
    add("slack_token", t.format(t=tok, ts=ts()), tok)
for i in range(5):
    path = "T" + rs(UP + DG, 8) + "/B" + rs(UP + DG, 10) + "/" + rs(AN, 24)
    add("webhook", f"{ts()} notify: POST https://hooks.slack.com/services/{path} returned 404 no_service", path)
for i in range(2):
    path = rs(DG, 18) + "/" + rs(B64U, 68)
    add("webhook", f"Discord webhook failed: https://discord.com/api/webhooks/{path} -> 401", path)

# ---------------------------------------------------------------- Stripe
for i in range(10):
    kind = R.choice(["sk_live_", "rk_live_", "sk_test_", "whsec_"])
    tok = kind + rs(AN, R.choice([24, 32, 99]))
    t = R.choice([
        "Stripe::AuthenticationError: Invalid API Key provided: {t}",
        "stripe.error.AuthenticationError: No such API key: '{t}'",
        "{ts} ERROR webhook signature verification failed (signing key {t})",
        "(Stripe.Error) %Stripe.Error{{source: :stripe, code: :invalid_request_error, message: \"Invalid API Key provided: {t}\"}}",
    ])
    add("stripe_key", t.format(t=tok, ts=ts()), tok)

# ---------------------------------------------------------------- OpenAI / Anthropic / Google
for i in range(10):
    tok = R.choice(["sk-" + rs(AN, 48), "sk-proj-" + rs(B64U, 120), "sk-svcacct-" + rs(B64U, 80)])
    t = R.choice([
        "openai.AuthenticationError: Error code: 401 - {{'error': {{'message': 'Incorrect API key provided: {t}', 'type': 'invalid_request_error'}}}}",
        "{ts} [error] LLM call failed: 401 Unauthorized key {t}",
        "OPENAI_API_KEY={t} mix run priv/scripts/eval.exs crashed",
    ])
    add("openai_key", t.format(t=tok, ts=ts()), tok)
for i in range(9):
    tok = "sk-ant-" + R.choice(["api03-", "admin01-"]) + rs(B64U, 93) + "AA"
    t = R.choice([
        "anthropic.AuthenticationError: Error code: 401 - invalid x-api-key {t}",
        "{ts} [error] claude -p exited 1: Invalid API key · {t}",
        "Req.Response status=401 body=\"authentication_error\" for key {t}",
    ])
    add("anthropic_key", t.format(t=tok, ts=ts()), tok)
for i in range(7):
    tok = "AIza" + rs(B64U, 35)
    t = R.choice([
        "googleapi: Error 400: API key not valid. Please pass a valid API key. (key {t})",
        "{ts} GET https://maps.googleapis.com/maps/api/geocode/json?address=Berlin&key={t} -> 403",
        "Firebase init failed, web config apiKey {t} restricted",
    ])
    add("google_key", t.format(t=tok, ts=ts()), tok)
for i in range(3):
    tok = "ya29." + rs(B64U, 120)
    add("google_token", f"{ts()} Goth fetch ok but Pub/Sub 403 with {tok}", tok)

# ---------------------------------------------------------------- Telegram
for i in range(4):
    tok = str(R.randint(100000000, 9999999999)) + ":" + "AA" + rs(B64U, 33)
    add("telegram_token", f"{ts()} telegram: POST https://api.telegram.org/bot{tok}/sendMessage -> 401 Unauthorized", tok)

# ---------------------------------------------------------------- JWT
for i in range(16):
    tok = jwt()
    t = R.choice([
        "Joken.verify_and_validate failed: signature_error for {t}",
        "{ts} [warning] rejecting expired JWT {t} (exp in the past)",
        "{{\"level\":\"error\",\"msg\":\"jwt invalid\",\"jwt\":\"{t}\"}}",
        "Guardian.decode_and_verify(\"{t}\") => {{:error, :token_expired}}",
        "websocket connect params: %{{\"vsn\" => \"2.0.0\", \"jwt\" => \"{t}\"}} -> :error",
        "https://app.example.com/magic?t={t} expired",
    ])
    add("jwt", t.format(t=tok, ts=ts()), tok)
tok = b64url(b'{"alg":"none","typ":"JWT"}') + "." + b64url(b'{"sub":"42","admin":true}') + "."
add("jwt", f"unsigned token accepted?! {tok} from 10.0.3.7", tok)

# ---------------------------------------------------------------- Authorization / Bearer / Basic
for i in range(10):
    tok = R.choice([rs(B64U, 40), jwt(), "ghp_" + rs(AN, 36), rs(AN, 32)])
    t = R.choice([
        "Authorization: Bearer {t}",
        "curl -sS -H \"Authorization: Bearer {t}\" https://api.example.com/v1/jobs returned 401",
        "{ts} request headers: [{{\"authorization\", \"Bearer {t}\"}}, {{\"accept\", \"application/json\"}}]",
        "{{\"headers\": {{\"Authorization\": \"Bearer {t}\", \"Accept\": \"*/*\"}}}}",
        "upstream rejected bearer {t}: 401",
    ])
    add("bearer", t.format(t=tok, ts=ts()), tok)
for i in range(6):
    user = R.choice(["admin", "deploy", "ci", "metrics", "alice"])
    cred = base64.b64encode(f"{user}:{pw()}".encode()).decode()
    t = R.choice([
        "Authorization: Basic {c}",
        "{ts} proxy-authorization: Basic {c} rejected by squid",
        "HTTPoison.get!(url, [{{\"Authorization\", \"Basic {c}\"}}]) -> 401",
    ])
    add("basic_auth", t.format(c=cred, ts=ts()), cred)
for i in range(3):
    tok = rs(AN, 40)
    add("secret", R.choice(["Authorization: Token {t}", "X-Auth-Token: {t} expired", "x-api-key: {t} (invalid)"]).format(t=tok), tok)
tok = rs(DG + "abcdef", 32)
add("secret", f'Authorization: Digest username="ops", realm="api", nonce="{tok}", response="{rs(DG + "abcdef", 32)}"', tok)

# ---------------------------------------------------------------- key = value
KEYS = ["password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "access_key", "private_key",
        "client_secret", "auth", "credentials", "session", "DB_PASSWORD", "db.password", "PASSWORD",
        "Api-Key", "refresh_token", "accessToken", "clientSecret", "SECRET_KEY_BASE", "sessionId",
        "spring.datasource.password", "smtp_pass" , "JSESSIONID", "csrf_token", "signing_key", "passphrase"]
KEYS.remove("smtp_pass")
FORMS = [
    ("{k}={v}", None), ("{k}: {v}", None), ("\"{k}\":\"{v}\"", None), ("\"{k}\": \"{v}\"", None),
    ("'{k}': '{v}'", None), ("{k} = \"{v}\"", None), ("\"{k}\" => \"{v}\"", None), ("{k}: \"{v}\"", None),
    ("\\\"{k}\\\":\\\"{v}\\\"", None), ("<{k}>{v}</{k}>", None), ("?{k}={v}&page=2", None), ("--{k}={v}", None),
]
CTX = [
    "{ts} [error] connect failed: {kv} host=db-1.internal",
    "** (RuntimeError) invalid config {kv}",
    "{ts} ERROR request params %{{{kv}, \"user\" => \"bob\"}}",
    "Parameters: {{{kv}, \"remember_me\":\"1\"}}",
    "{ts} WARN retrying with {kv} (attempt 2 of 5)",
    "config/runtime.exs:14: {kv}",
    "env dump: HOME=/home/app {kv} LANG=C.UTF-8",
    "{ts} [debug] POST /api/login body: {kv}",
]
for i in range(70):
    k = KEYS[i % len(KEYS)]
    form = FORMS[(i * 7 + i // len(KEYS)) % len(FORMS)][0]
    if form.startswith("?") or form.startswith("--"):
        k = k if k[0].isalpha() else "token"
    v = pw()
    kv = form.format(k=k, v=v)
    line = R.choice(CTX).format(kv=kv, ts=ts())
    add("secret", line, v)
# values carrying spaces when quoted
for i in range(4):
    v = pw(8) + " " + pw(8) + " " + pw(6)
    add("secret", f'{ts()} [error] vault write failed: {{"password": "{v}", "ttl": "1h"}}', v)
# JSON-escaped inside a JSON log string
for i in range(3):
    v = pw()
    add("secret", '{"level":"error","message":"bad body {\\"username\\":\\"bob\\",\\"password\\":\\"' + v + '\\"}"}', v)
# JSON encoded twice (a JSON log line carrying a JSON string of JSON)
for i in range(2):
    v = pw()
    add("secret", '{"msg":"{\\"body\\":\\"{\\\\\\"api_key\\\\\\":\\\\\\"' + v + '\\\\\\"}\\"}"}', v)
# Cookie headers: the rest of the line goes
for i in range(4):
    v1 = rs(B64U, 60); v2 = rs(AN, 24)
    add("secret", f"{ts()} request Cookie: _acme_key={v1}; remember_token={v2}", v1, v2)
for i in range(2):
    v = rs(AN, 32)
    add("secret", f"Set-Cookie: PHPSESSID={v}; path=/; HttpOnly", v)

# ---------------------------------------------------------------- URL userinfo
for i in range(14):
    p = pw().replace("/", "x").replace("@", "%40")
    t = R.choice([
        "** (DBConnection.ConnectionError) postgres://app:{p}@db.internal:5432/app_prod: connection refused",
        "{ts} Redix failed to connect to redis://:{p}@cache-2:6379/0",
        "amqp://guest:{p}@rabbit.internal:5672/%2f closed: ACCESS_REFUSED",
        "GET https://deploy:{p}@registry.example.com/v2/acme/api/manifests/latest 401",
        "mongodb+srv://admin:{p}@cluster0.example.net/?retryWrites=true timed out",
        "{ts} DATABASE_URL=ecto://postgres:{p}@localhost/acme_dev is unreachable",
    ])
    add("password", t.format(p=p, ts=ts()), p)

# ---------------------------------------------------------------- e-mail
FIRST = ["alice", "bob", "carol", "dmitri", "eve", "fatima", "gustavo", "hiro", "ines", "jamal", "kofi", "lena"]
LAST = ["johnson", "smith", "okafor", "ivanova", "tanaka", "garcia", "muller", "nguyen", "rossi", "haddad"]
DOM = ["example.com", "example.org", "mail.example.net", "acme.test", "corp.example.co.uk"]
for i in range(20):
    e = R.choice([
        f"{R.choice(FIRST)}.{R.choice(LAST)}@{R.choice(DOM)}",
        f"{R.choice(FIRST)}+{rs(LO, 5)}@{R.choice(DOM)}",
        f"{R.choice(FIRST)}_{R.randint(1, 999)}@{R.choice(DOM)}",
    ])
    t = R.choice([
        "{ts} [error] Swoosh delivery failed to={e}: 550 mailbox unavailable",
        "** (Ecto.ConstraintError) unique_constraint users_email_index: {e} already taken",
        "From: \"Support\" <{e}> bounced",
        "user {e} not found in tenant 42",
        "{{\"event\":\"signup_failed\",\"email\":\"{e}\",\"reason\":\"disposable\"}}",
        "mailto:{e} link rendered with bad subject",
    ])
    add("email", t.format(e=e, ts=ts()), e)

# ---------------------------------------------------------------- cards
CARDS = [("4", 16, [4, 4, 4, 4]), ("51", 16, [4, 4, 4, 4]), ("55", 16, [4, 4, 4, 4]), ("2221", 16, [4, 4, 4, 4]),
         ("34", 15, [4, 6, 5]), ("37", 15, [4, 6, 5]), ("6011", 16, [4, 4, 4, 4]), ("65", 16, [4, 4, 4, 4]),
         ("4", 13, None), ("4", 19, [4, 4, 4, 4, 3]), ("36", 14, [4, 6, 4]), ("3528", 16, [4, 4, 4, 4])]
for i in range(24):
    pre, n, sizes = CARDS[i % len(CARDS)]
    num = luhn_complete(pre, n)
    spacing = R.choice(["", " ", "-"]) if sizes else ""
    c = group(num, sizes, spacing) if spacing else num
    t = R.choice([
        "{ts} [error] charge declined card={c} amount=49.00 EUR",
        "Stripe::CardError: Your card was declined. (card_number: {c})",
        "{{\"pan\":\"{c}\",\"exp\":\"09/27\",\"status\":\"declined\"}}",
        "payment retry for {c} failed with do_not_honor",
        "card {c} 2027 rejected",
    ])
    add("card", t.format(c=c, ts=ts()), c)

# ---------------------------------------------------------------- PEM
def pem_body(lines):
    return "\n".join(rs(AN + "+/", 64) for _ in range(lines)) + "\n" + rs(AN + "+/", 20) + "=="
for label in ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"]:
    body = pem_body(R.randint(3, 6))
    line = f"{ts()} [error] failed to load key:\n-----BEGIN {label}-----\n{body}\n-----END {label}-----\nretrying"
    add("private_key", line, *body.split("\n"))
body = pem_body(3)
add("private_key", f"ssl: cannot parse -----BEGIN PRIVATE KEY-----\n{body}", *body.split("\n"))
body = pem_body(2).replace("\n", "\\n")
add("secret", '{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\\n' + body + '\\n-----END PRIVATE KEY-----\\n","client_email":"x"}', *body.split("\\n"))
body = pem_body(2)
add("private_key", f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{body}\n-----END PGP PRIVATE KEY BLOCK-----", *body.split("\n"))

# ---------------------------------------------------------------- several in one line
for i in range(6):
    e = f"{R.choice(FIRST)}.{R.choice(LAST)}@{R.choice(DOM)}"
    tok = jwt(); v = pw()
    add("email,jwt,secret", f"{ts()} login failed email={e} jwt={tok} password={v}", e, tok, v)

# ---------------------------------------------------------------- configured patterns
PATTERNS = ["ACME-[0-9]{6}-[A-Z]{4}", "tenant_[a-f0-9]{16}", "EMP[0-9]{7}"]
for i in range(4):
    s = f"ACME-{rs(DG, 6)}-{rs(UP, 4)}"
    add("pattern", f"{ts()} license check failed for {s} (expired)", s)
for i in range(3):
    s = f"tenant_{rs('0123456789abcdef', 16)}"
    add("pattern", f"** (KeyError) key {s} not found in registry", s)
for i in range(3):
    s = f"EMP{rs(DG, 7)}"
    add("pattern,email", f"HR sync: {s} maps to {R.choice(FIRST)}@example.com twice", s)

out = sys.stdout
out.write("# Synthetic secret-bearing log lines for test/c/test_scrub.c. Generated from a\n")
out.write(f"# seeded PRNG (seed {SEED}); no secret here is real. Card numbers carry a\n")
out.write("# computed Luhn check digit. Format: KINDS<TAB>LINE<TAB>SECRET...; escapes\n")
out.write("# \\\\ \\t \\n \\r \\0 \\xHH. '@pattern<TAB>ERE' adds a configured pattern.\n")
for p in PATTERNS:
    out.write("@pattern\t" + esc(p) + "\n")
for kinds, line, secrets in recs:
    out.write("\t".join([kinds, esc(line)] + [esc(s) for s in secrets]) + "\n")
print(len(recs), file=sys.stderr)
