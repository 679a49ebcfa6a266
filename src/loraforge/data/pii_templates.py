"""Template families for the synthetic PII data (``loraforge data pii``).

A template is text with slots: ``«NAME»`` (upper case) is personal data and becomes a placeholder,
``«company»`` (lower case) is a realistic filler that must stay, ``«a|b|c»`` picks one variant.
A digit after an upper-case slot names another person (``«NAME2»``); the same slot twice in one
template is the same value, as in real text ("Hi «FIRST», ... «NAME»").

Every template belongs to the ``train`` or the ``test`` family, so the test set measures masking
in contexts the model never saw. Templates with no upper-case slot are hard negatives: they look
like they hold personal data (IP-shaped versions, commit hashes, template variables, existing
placeholders, card last-four digits, public companies, ordinary dates) but hold none.
"""

from __future__ import annotations

from dataclasses import dataclass

PLACEHOLDER_TYPES = ("NAME", "EMAIL", "PHONE", "ADDRESS", "DATE_OF_BIRTH", "SSN", "CREDIT_CARD", "IBAN",
                     "IP_ADDRESS", "USERNAME", "PASSWORD")

# slot kind -> placeholder type (FIRST is a given name on its own; TOKEN an API key or token)
SLOT_TYPES = {"NAME": "NAME", "FIRST": "NAME", "EMAIL": "EMAIL", "PHONE": "PHONE", "ADDRESS": "ADDRESS",
              "DOB": "DATE_OF_BIRTH", "SSN": "SSN", "CARD": "CREDIT_CARD", "IBAN": "IBAN", "IP": "IP_ADDRESS",
              "USERNAME": "USERNAME", "PASSWORD": "PASSWORD", "TOKEN": "PASSWORD"}


@dataclass(frozen=True)
class Template:
    name: str  # "<context>/<variant>"
    split: str  # "train" | "test"
    text: str
    locales: tuple[str, ...] = ()  # non-English prose fixes the locale; empty = any

    @property
    def context(self) -> str:
        return self.name.split("/")[0]


def _t(name: str, split: str, text: str, locales: tuple[str, ...] = ()) -> Template:
    return Template(name, split, text.strip("\n"), locales)


DE, FR, ES, ZH, JA = ("de_DE", "de_AT", "de_CH"), ("fr_FR", "fr_CA"), ("es_ES", "es_MX"), ("zh_CN",), ("ja_JP",)

TEMPLATES: list[Template] = [
    # --- emails -----------------------------------------------------------------------------
    _t("email/intro", "train", """
Subject: «Intro|Quick intro|Introduction» - «company» partnership

Hi «FIRST»,

«I'm|This is» «NAME2» from «company». You can reach me at «EMAIL2» or «PHONE2». Let's talk before «date»?

Best,
«NAME2»"""),
    _t("email/invoice", "train", """
Dear «NAME»,
Your invoice «invoice» for «amount» is overdue. Please transfer it to IBAN «IBAN» by «date».
Billing address on file: «ADDRESS».
«company» Accounts Receivable"""),
    _t("email/password_reset", "train", """
From: no-reply@«domain»
To: «EMAIL»
Hello «USERNAME», a password reset was requested from IP «IP» on «date». Your temporary password is «PASSWORD». «product» support will never ask for it."""),
    _t("email/forward", "train", """
---------- Forwarded message ---------
From: «NAME» <«EMAIL»>
Date: «date»
Subject: Re: «product» renewal

Can you update my card to «CARD»? Same billing address: «ADDRESS». Thanks!"""),
    _t("email/reference", "test", """
To whom it may concern,

I am pleased to recommend «NAME», born «DOB», who worked with me at «company» in «city» for «num» years. Feel free to call me on «PHONE2».

Sincerely, «NAME2»"""),
    _t("email/shipping", "test", """
Hi «FIRST», your order «order» has shipped to «ADDRESS». The courier may call «PHONE» if nobody is home. Paid with card ending in «last4» — questions? Reply to this email.
— «company» Shop"""),
    _t("email/de_bewerbung", "train", """
Sehr geehrte Damen und Herren,
anbei meine Bewerbung. «NAME», geboren am «DOB», wohnhaft «ADDRESS», Tel. «PHONE», E-Mail «EMAIL».
Mit freundlichen Grüßen""", DE),
    _t("email/fr_resiliation", "test", """
Bonjour,
Je souhaite résilier mon abonnement «product». Nom : «NAME». Adresse : «ADDRESS». IBAN : «IBAN».
Cordialement""", FR),
    # --- support tickets --------------------------------------------------------------------
    _t("ticket/login", "train", """
Ticket «ticket» | priority: «low|medium|high»
Customer «NAME» («EMAIL») cannot log in to «product». Username: «USERNAME». Last successful login from «IP» on «date». Phone for callback: «PHONE»."""),
    _t("ticket/refund", "train", """
[«ticket»] Refund request
The customer says «CARD» was charged twice for «amount». Name on card: «NAME». Please refund before «date»."""),
    _t("ticket/identity", "train", """
Verification failed for account «USERNAME»: submitted ID number «SSN» does not match the date of birth «DOB» on file. Escalated to «company» KYC team."""),
    _t("ticket/address_change", "test", """
#«ticket» Address change
Old: «ADDRESS»
New: «ADDRESS2»
Requested by «NAME» via phone («PHONE») on «date». Agent ID: «agentid»."""),
    _t("ticket/chargeback", "test", """
Chargeback «ticket»: card «CARD», holder «NAME», disputed «amount». Customer contact «EMAIL». Note: the «company» merchant account was not affected."""),
    _t("ticket/es_soporte", "train", """
Hola, soy «NAME». No puedo acceder a mi cuenta «USERNAME» desde «date». Mi teléfono es «PHONE» y mi correo «EMAIL».""", ES),
    # --- chat logs --------------------------------------------------------------------------
    _t("chat/support", "train", """
[«time»] agent_«agentid»: Hi, how can I help?
[«time»] user: hi it's «NAME», my email is «EMAIL»
[«time»] agent_«agentid»: Thanks! Can you confirm your date of birth?
[«time»] user: «DOB»"""),
    _t("chat/slack_secret", "train", """
«FIRST»: can someone deploy «service» to «ns»?
«FIRST2»: sure, what's the db password again?
«FIRST»: «PASSWORD» (please rotate it after «date»)"""),
    _t("chat/whatsapp", "train", """
«FIRST»: I'm at «ADDRESS», ring twice
«FIRST2»: ok! my new number is «PHONE2» btw
«FIRST»: 👍 see you at «time»"""),
    _t("chat/gaming", "test", """
<«USERNAME»> gg everyone
<«USERNAME2»> «USERNAME» add me, my real name is «NAME» lol
<«USERNAME»> sure, email me at «EMAIL»"""),
    _t("chat/teams_token", "test", """
«NAME»  «time»
here's the «service» token for staging: «TOKEN»
«NAME2»  «time»
thanks! the «product» version is «version» btw"""),
    _t("chat/zh_kefu", "train", """
客服：您好，请提供您的姓名和手机号。
用户：我叫«NAME»，手机号«PHONE»，身份证号«SSN»。""", ZH),
    _t("chat/ja_toiawase", "test", """
お問い合わせ：«NAME»様（電話 «PHONE»、メール «EMAIL»）から«product»の返品について連絡がありました。""", JA),
    # --- HR notes ---------------------------------------------------------------------------
    _t("hr/onboarding", "train", """
HR onboarding checklist - «NAME»
- Start date: «date» («company», «city» office)
- Date of birth: «DOB»
- SSN / national ID: «SSN»
- Salary account: «IBAN»
- Home address: «ADDRESS»"""),
    _t("hr/review", "train", """
Performance review «year»: «NAME» exceeded targets on the «product» migration. Manager: «NAME2». Next review «date»."""),
    _t("hr/sick_leave", "test", """
Note to payroll: «NAME» (employee «empid», DOB «DOB») is on sick leave from «date». Reach them at «PHONE» or «EMAIL».
"""),
    _t("hr/de_personal", "test", """
Personalakte: «NAME», geb. «DOB», Steuer-ID «SSN», Bankverbindung «IBAN», Anschrift «ADDRESS».""", DE),
    # --- server logs ------------------------------------------------------------------------
    _t("log/nginx", "train", """
«IP» - «USERNAME» [«clf_time»] "GET /api/v«major»/orders/«order» HTTP/1.1" 200 «num» "-" "«agent_ua»"
«IP2» - - [«clf_time»] "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/«k8sver»\""""),
    _t("log/auth_fail", "train", """
«iso_time» WARN auth: failed login for user=«USERNAME» email=«EMAIL» from «IP» (attempt 3/5) request_id=«uuid»"""),
    _t("log/app_debug", "train", """
«iso_time» DEBUG payment.client: POST «url» body={"name": "«NAME»", "card": "«CARD»", "amount": «num»} trace=«hash»"""),
    _t("log/ssh", "test", """
«syslog_time» bastion sshd[«pid»]: Accepted password for «USERNAME» from «IP» port «port» ssh2
«syslog_time» bastion sshd[«pid»]: pam_unix(sshd:session): session opened for user «USERNAME»"""),
    _t("log/json", "test", """
{"ts":"«iso_time»","level":"error","msg":"signup failed","user":{"email":"«EMAIL»","phone":"«PHONE»","ip":"«IP»"},"service":"«service»","version":"«version»"}"""),
    # --- Kubernetes YAML / .env ----------------------------------------------------------------
    _t("k8s/secret", "train", """
apiVersion: v1
kind: Secret
metadata:
  name: «service»-credentials
  namespace: «ns»
stringData:
  DB_USER: «USERNAME»
  DB_PASSWORD: "«PASSWORD»"
  API_KEY: «TOKEN»"""),
    _t("dotenv/app", "train", """
# «service» settings
APP_ENV=«env»
DATABASE_URL=postgres://«USERNAME»:«PASSWORD»@db.«ns».svc:5432/«service»
STRIPE_SECRET_KEY=«TOKEN»
ADMIN_EMAIL=«EMAIL»
LOG_LEVEL=«loglevel»"""),
    _t("k8s/configmap_contact", "train", """
apiVersion: v1
kind: ConfigMap
metadata:
  name: «service»-oncall
data:
  owner: "«NAME»"
  pager: "«PHONE»"
  image: registry.example.com/«service»:«version»"""),
    _t("k8s/deployment_env", "test", """
      containers:
        - name: «service»
          image: ghcr.io/«org»/«service»:«version»
          env:
            - name: SMTP_USER
              value: «EMAIL»
            - name: SMTP_PASSWORD
              value: "«PASSWORD»"
            - name: GITHUB_TOKEN
              value: «TOKEN»"""),
    _t("dotenv/docker_compose", "test", """
services:
  «service»:
    environment:
      - MYSQL_USER=«USERNAME»
      - MYSQL_PASSWORD=«PASSWORD»
      - ALLOWED_IP=«IP»
    image: mysql:«version»"""),
    # --- forms and records ------------------------------------------------------------------
    _t("form/signup", "train", """
name=«NAME»&email=«EMAIL»&phone=«PHONE»&dob=«DOB»&plan=«plan»&ref=«company»"""),
    _t("form/csv", "train", """
id,name,email,phone,city
«num»,«NAME»,«EMAIL»,«PHONE»,«city»
«num»,«NAME2»,«EMAIL2»,«PHONE2»,«city»"""),
    _t("form/medical", "test", """
Patient: «NAME» | DOB: «DOB» | Insurance ID: «SSN» | Address: «ADDRESS» | Appointment: «date» at «time» with «NAME2»"""),
    # --- code, CSV and documents with many entities -------------------------------------------
    _t("code/python_fixture", "train", """
def test_signup():
    user = create_user(name="«NAME»", email="«EMAIL»", phone="«PHONE»")
    assert user.plan == "«plan»\""""),
    _t("code/sql_insert", "train", """
INSERT INTO customers (id, full_name, email, iban) VALUES
  («num», '«NAME»', '«EMAIL»', '«IBAN»'),
  («num2», '«NAME2»', '«EMAIL2»', '«IBAN2»');"""),
    _t("csv/audit", "train", """
timestamp,user,action,ip
«iso_time»,«USERNAME»,login,«IP»
«iso_time»,«USERNAME»,export,«IP»
«iso_time»,system,rotate-keys,127.0.0.1"""),
    _t("doc/meeting_notes", "train", """
Meeting notes - «company» vendor review («date»)
Attendees: «NAME», «NAME2», «NAME3»
1. «product» renewal: «pct»% discount quoted for «num» seats.
2. «FIRST2» sends the signed contract to «EMAIL2» by «date».
3. «FIRST3» shares a number for the on-site visit in «city»: «PHONE3»."""),
    _t("code/git_author", "test", """
git commit -m "fix: «service» retries (#«num»)" --author="«NAME» <«EMAIL»>\""""),
    _t("csv/payroll", "test", """
employee_id,full_name,date_of_birth,iban
«empid»,«NAME»,«DOB»,«IBAN»
«empid2»,«NAME2»,«DOB2»,«IBAN2»"""),
    # --- hard negatives (no personal data) -------------------------------------------------------
    _t("neg/release", "train", """
«product» «version» released on «date». Upgrade from «ipver» is supported; see the changelog for commit «hash»."""),
    _t("neg/template_env", "train", """
DB_HOST=postgres.«ns».svc
DB_PASSWORD=«tplvar»
API_KEY=«tplvar»
REPLICAS=«num»"""),
    _t("neg/placeholders", "train", """
Hi «placeholder», your ticket «ticket» was updated. Reply to «placeholder» if the issue persists after «date»."""),
    _t("neg/last4", "train", """
Payment of «amount» with the card ending in «last4» was approved on «date». Merchant: «company», «city»."""),
    _t("neg/k8s_manifest", "train", """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: «service»
  namespace: «ns»
spec:
  replicas: «num»
  template:
    spec:
      containers:
        - name: «service»
          image: «org»/«service»:«version»
          env:
            - name: PASSWORD
              valueFrom: {secretKeyRef: {name: «service»-secret, key: password}}"""),
    _t("neg/meeting", "train", """
Reminder: the «company» quarterly review is on «date» at «time» in «city». Agenda: «product» roadmap and the «year» budget."""),
    _t("neg/log_ids", "train", """
«iso_time» INFO request_id=«uuid» route=/v«major»/items status=200 latency_ms=«num» build=«hash» agent_version=«ipver»"""),
    _t("neg/news", "train", """
«company» shares rose «pct»% after the company announced a partnership with «company2» in «city» on «date»."""),
    _t("neg/redacted_log", "test", """
«iso_time» WARN login failed for user=«placeholder» from «placeholder» (masked by policy «version»)"""),
    _t("neg/helm_values", "test", """
auth:
  username: «tplvar»
  password: «tplvar»
image:
  tag: "«version»"
service:
  port: «port»"""),
    _t("neg/support_faq", "test", """
Q: Where do I find my «product» license key?
A: In Settings → Billing. Cards ending in «last4» expire on «date»; «company» will email you 30 days before."""),
    _t("neg/versions", "test", """
Tested on kernel «ipver» with driver «ipver2» and «product» «version». Regression first seen in build «hash» («date»)."""),
    _t("neg/code_loop", "train", """
for attempt in range(«num»):
    resp = client.get("«url»", timeout=«port»)
    if resp.ok:
        break"""),
    _t("neg/csv_products", "train", """
sku,product,price,updated
A-«num»,«product» licence,«amount»,«date»
B-«num2»,«product2» support,«amount»,«date»"""),
    _t("neg/sql_select", "test", """
SELECT order_id, status FROM orders WHERE created_at > '«date»' AND status = 'SHIPPED' LIMIT «num»;"""),
    _t("neg/zh_notice", "train", """
«company»将于«date»在«city»举行发布会，介绍«product» «version»的新功能。""", ZH),
]
