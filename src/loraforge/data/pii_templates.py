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

from dataclasses import dataclass, replace

PLACEHOLDER_TYPES = ("NAME", "EMAIL", "PHONE", "ADDRESS", "DATE_OF_BIRTH", "SSN", "CREDIT_CARD", "IBAN",
                     "IP_ADDRESS", "USERNAME", "PASSWORD")

# slot kind -> placeholder type (FIRST is a given name on its own; TOKEN an API key or token;
# PASSPORT a passport number, an ID number of type SSN by the annotation rules)
SLOT_TYPES = {"NAME": "NAME", "FIRST": "NAME", "EMAIL": "EMAIL", "PHONE": "PHONE", "ADDRESS": "ADDRESS",
              "DOB": "DATE_OF_BIRTH", "SSN": "SSN", "PASSPORT": "SSN", "CARD": "CREDIT_CARD", "IBAN": "IBAN", "IP": "IP_ADDRESS",
              "USERNAME": "USERNAME", "PASSWORD": "PASSWORD", "TOKEN": "PASSWORD"}


@dataclass(frozen=True)
class Template:
    name: str  # "<context>/<variant>"
    split: str  # "train" | "test"
    text: str
    locales: tuple[str, ...] = ()  # non-English prose fixes the locale; empty = any
    generation: int = 1  # the template set it was added in: held-out-context splits draw from generation 1

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
    # === widening the train family (contexts no test template uses) ============================
    # --- chat: short, lowercase, typos; speakers are names or handles --------------------------
    _t("slack/dm_lowercase", "train", """
«FIRST» «time»
hey r u still coming to the «product» workshop tmrw?
«FIRST2» «time»
yes!! can u send the invite to my personal adress, the work one is blocked on my phone
«FIRST2» «time»
«EMAIL2»
«FIRST» «time»
done 👍 «FIRST3» says hi btw"""),
    _t("slack/oncall_thread", "train", """
#«service»-oncall
«USERNAME» «time»: «service» keeps 500ing on «env», who has the admin login??
«USERNAME2» «time»: its «USERNAME3» / «PASSWORD»
«USERNAME2» «time»: pls dont paste that in the incident doc, rotating it «date»
«USERNAME» «time»: ty, in. looks like «product» ran out of conections again"""),
    _t("gruppenchat/de_party", "train", """
«FIRST»: party bei mir am samstag ab 19 uhr 🎉 adresse: «ADDRESS», klingel bei «NAME»
«FIRST2»: yay, soll ich was mitbringen?
«FIRST»: getränke wär super. falls ihr nicht reinkommt ruft an: «PHONE»
«FIRST3»: bin dabei, komme aber erst später aus «city»""", DE),
    _t("mensaje/es_viaje", "train", """
«FIRST»: oye ya saqué los billetes pa «city» 🙌
«FIRST»: me pasas tu dni y la fecha de nacimiento pa la reserva del hotel?
«FIRST2»: «SSN2», nací el «DOB2»
«FIRST»: perfe, la confirmación te llega a «EMAIL2»""", ES),
    _t("shanai/ja_chat", "train", """
«NAME»：«product»の管理者パスワードを変更しました → «PASSWORD»
«NAME2»：ありがとうございます！«env»環境のユーザー名は«USERNAME»のままですか？
«NAME»：はい、そのままです。«date»以降は旧パスワードは使えません。""", JA),
    # --- support tickets ------------------------------------------------------------------------
    _t("helpdesk/new_laptop", "train", """
Request «ticket» - hardware for a new starter
Employee: «NAME» («empid»), starts «date»
Manager: «NAME2» <«EMAIL2»>
AD account: «USERNAME» (temporary password goes by SMS to «PHONE»)
Ship to home: «ADDRESS»
Items: 14" laptop, dock, headset
Status: «waiting for approval|in progress|shipped»"""),
    _t("crm/call_summary", "train", """
Call summary - «date» «time», agent «agentid»
Caller identified as «NAME» (DOB «DOB», address on file «ADDRESS»).
Reason: the direct debit for «invoice» was taken twice. Refund of «amount» approved to IBAN «IBAN».
Customer wants written confirmation to «EMAIL»; callback number «PHONE».
Next step: finance confirms by «date»."""),
    _t("support/es_reclamacion", "train", """
Reclamación «ticket»
Cliente: «NAME» (DNI «SSN»)
Domicilio: «ADDRESS»
Motivo: cobro duplicado de «amount» en la tarjeta «CARD» el «date».
Teléfono de contacto: «PHONE». El cliente pide respuesta por escrito.""", ES),
    # --- application and server logs ------------------------------------------------------------
    _t("mailserver/dovecot", "train", """
«syslog_time» mail dovecot: imap-login: Login: user=<«EMAIL»>, method=PLAIN, rip=«IP», lip=«IP2», mpid=«pid», TLS
«syslog_time» mail dovecot: imap-login: Disconnected (auth failed, 3 attempts in «num» secs): user=<«EMAIL3»>, method=PLAIN, rip=«IP3», lip=«IP2», TLS
«syslog_time» mail dovecot: imap(«EMAIL»)<«pid»>: Logged out in=«num» out=«num»"""),
    _t("syslog/pam_su", "train", """
«syslog_time» «service» su[«pid»]: pam_unix(su:auth): authentication failure; logname=«USERNAME» uid=«num» euid=0 tty=/dev/pts/«major» ruser=«USERNAME» rhost=  user=root
«syslog_time» «service» su[«pid»]: FAILED SU (to root) «USERNAME» on pts/«major»
«syslog_time» «service» sudo[«pid»]: «USERNAME2» : TTY=pts/«major» ; PWD=/home/«USERNAME2» ; USER=root ; COMMAND=/usr/bin/systemctl restart «service»"""),
    _t("accesslog/haproxy", "train", """
«syslog_time» lb1 haproxy[«pid»]: «IP»:«port» [«clf_time»] https~ «service»/web«major» 0/0/«num»/«num»/«num» 200 «num» - - ---- «num»/«num»/0/0/0 0/0 "GET /account/settings?email=«EMAIL» HTTP/1.1"
«syslog_time» lb1 haproxy[«pid»]: 127.0.0.1:«port» [«clf_time»] http «service»/web«major» 0/0/0/1/1 200 «num» - - ---- 1/1/0/0/0 0/0 "GET /healthz HTTP/1.1"
«syslog_time» lb1 haproxy[«pid»]: «IP2»:«port» [«clf_time»] https~ «service»/web«major» 0/0/«num»/«num»/«num» 302 «num» - - ---- «num»/«num»/0/0/0 0/0 "POST /login HTTP/1.1\""""),
    _t("jsonlog/audit_ndjson", "train", """
{"@timestamp":"«iso_time»","event.action":"user.login","event.outcome":"success","user.name":"«USERNAME»","source.ip":"«IP»","user_agent":"«agent_ua»"}
{"@timestamp":"«iso_time»","event.action":"user.email_changed","user.name":"«USERNAME»","old_email":"«EMAIL»","new_email":"«EMAIL2»"}
{"@timestamp":"«iso_time»","event.action":"job.finished","job":"«service»-export","duration_ms":«num»,"trace.id":"«hash»"}"""),
    _t("applog/traceback", "train", """
«iso_time» ERROR [«service»] unhandled exception in POST /register
Traceback (most recent call last):
  File "/srv/«service»/app/views.py", line «num», in register
    mailer.send_welcome(form.email)
  File "/srv/«service»/app/mailer.py", line «num», in send_welcome
    smtp.sendmail(SENDER, [to], body)
smtplib.SMTPRecipientsRefused: {'«EMAIL»': (550, b'5.1.1 mailbox unavailable')}
locals: username='«USERNAME»' password='«PASSWORD»' remote_addr='«IP»'"""),
    _t("vpnlog/openvpn", "train", """
«syslog_time» vpn-gw openvpn[«pid»]: «IP»:«port» TLS: Username/Password authentication succeeded for username '«USERNAME»'
«syslog_time» vpn-gw openvpn[«pid»]: «USERNAME»/«IP»:«port» MULTI_sva: pool returned IPv4=«IP2», IPv6=(Not enabled)
«syslog_time» vpn-gw openvpn[«pid»]: «IP3»:«port» TLS Auth Error: Auth Username/Password verification failed for peer (user '«USERNAME3»')"""),
    # --- Kubernetes -----------------------------------------------------------------------------
    _t("kube/owner_annotations", "train", """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: «service»
  namespace: «ns»
  annotations:
    owner: «EMAIL»
    oncall-secondary: «EMAIL2»
    team-channel: "#«service»-dev"
    support: platform-team@«domain»
    app.kubernetes.io/version: "«version»"
spec:
  replicas: «num»"""),
    _t("kube/dockerconfig_secret", "train", """
apiVersion: v1
kind: Secret
metadata:
  name: regcred
  namespace: «ns»
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: |
    {"auths": {"ghcr.io": {"username": "«USERNAME»", "password": "«TOKEN»", "email": "«EMAIL»"}}}"""),
    _t("kube/basic_auth", "train", """
apiVersion: v1
kind: Secret
metadata:
  name: «service»-basic-auth
  annotations:
    created-by: «NAME»
type: kubernetes.io/basic-auth
stringData:
  username: «USERNAME»
  password: «PASSWORD»
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: «service»
  annotations:
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: «service»-basic-auth
    nginx.ingress.kubernetes.io/whitelist-source-range: «10.0.0.0/8|172.16.0.0/12|192.168.0.0/16|100.64.0.0/10»"""),
    # --- .env files and shells ------------------------------------------------------------------
    _t("envfile/django", "train", """
DEBUG=False
SECRET_KEY=«TOKEN»
ALLOWED_HOSTS=localhost,127.0.0.1,«service».«domain»
EMAIL_HOST=smtp.«domain»
EMAIL_HOST_USER=«EMAIL»
EMAIL_HOST_PASSWORD=«PASSWORD»
INTERNAL_IPS=127.0.0.1,«IP»
DATABASE_URL=mysql://«USERNAME»:«PASSWORD2»@db.«ns».svc:3306/«service»"""),
    _t("shell/exports", "train", """
# added by «FIRST» for the «service» migration, remove after «date»
export PATH="$HOME/.local/bin:$PATH"
export PGHOST=«IP»
export PGUSER=«USERNAME»
export PGPASSWORD='«PASSWORD»'
export AWS_ACCESS_KEY_ID=«TOKEN»
export AWS_DEFAULT_REGION=eu-central-1"""),
    _t("shell/history", "train", """
  «num»  cd ~/src/«service» && git pull
  «num»  mysql -h «IP» -u «USERNAME» -p'«PASSWORD»' «service»_«env»
  «num»  ssh «USERNAME2»@«IP2»
  «num»  git remote set-url origin https://«USERNAME2»:«TOKEN»@github.com/«org»/«service».git
  «num»  kubectl -n «ns» rollout restart deploy/«service»
  «num»  history | grep ssh"""),
    # --- code -----------------------------------------------------------------------------------
    _t("pycode/settings_dict", "train", """
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "«service»",
        "USER": "«USERNAME»",
        "PASSWORD": "«PASSWORD»",
        "HOST": "«IP»",
        "PORT": «port»,
    }
}
ADMINS = [("«NAME»", "«EMAIL»")]"""),
    _t("sqlrows/patients", "train", """
INSERT INTO patients (mrn, full_name, phone, insurance_no, created_at) VALUES
  («order», '«NAME»', '«PHONE»', '«SSN»', '«iso_time»'),
  («order», '«NAME2»', '«PHONE2»', '«SSN2»', '«iso_time»'),
  («order», '«NAME3»', '«PHONE3»', '«SSN3»', '«iso_time»');"""),
    _t("apijson/create_customer", "train", """
POST /v«major»/customers HTTP/1.1
Host: api.«domain»
Authorization: Bearer «TOKEN»
Content-Type: application/json

{
  "name": "«NAME»",
  "email": "«EMAIL»",
  "phone": "«PHONE»",
  "birthdate": "«DOB»",
  "address": "«ADDRESS»",
  "metadata": {"signup_ip": "«IP»", "plan": "«plan»", "referrer": "«company»"}
}"""),
    _t("jscode/seed_users", "train", """
// seed data for local dev - replace with fakes before «date»
export const users = [
  { id: «num», name: '«NAME»', email: '«EMAIL»', role: 'admin', password: '«PASSWORD»' },
  { id: «num», name: '«NAME2»', email: '«EMAIL2»', role: 'viewer', password: '«PASSWORD2»' },
];"""),
    # --- CSV / TSV with many entities -----------------------------------------------------------
    _t("sheet/contact_list", "train", """
name,email,phone,address,member_since
«NAME»,«EMAIL»,«PHONE»,"«ADDRESS»",«year»
«NAME2»,«EMAIL2»,«PHONE2»,"«ADDRESS2»",«year»
«NAME3»,«EMAIL3»,«PHONE3»,"«ADDRESS3»",«year»
«NAME4»,«EMAIL4»,«PHONE4»,"«ADDRESS4»",«year»"""),
    _t("sheet/signups_tsv", "train", """
signup_ts\tusername\temail\tip\tplan
«iso_time»\t«USERNAME»\t«EMAIL»\t«IP»\t«plan»
«iso_time»\t«USERNAME2»\t«EMAIL2»\t«IP2»\t«plan»
«iso_time»\t«USERNAME3»\t«EMAIL3»\t«IP3»\t«plan»
«iso_time»\tsystem\tnoreply@«domain»\t127.0.0.1\t«plan»"""),
    _t("sheet/payout_batch", "train", """
value_date;beneficiary;iban;amount;reference
«date»;«NAME»;«IBAN»;«amount»;«invoice»
«date»;«NAME2»;«IBAN2»;«amount»;«invoice»
«date»;«company» GmbH;«IBAN3»;«amount»;«invoice»"""),
    # --- forms ----------------------------------------------------------------------------------
    _t("intake/clinic", "train", """
NEW PATIENT REGISTRATION - «city» Family Practice
Full name: «NAME»
Date of birth: «DOB»
Health insurance no.: «SSN»
Home address: «ADDRESS»
Mobile: «PHONE»
Email (appointment reminders): «EMAIL»
Emergency contact: «NAME2» («spouse|parent|sibling|friend»), «PHONE2»
Allergies: «none known|penicillin|latex|peanuts»
Referred by: «NAME3»
Form completed on «date»"""),
    _t("rental/application", "train", """
RENTAL APPLICATION - unit «num», «city»
Applicant: «NAME»    Date of birth: «DOB»
SSN: «SSN»
Current address: «ADDRESS» (since «year»)
Phone: «PHONE»    Email: «EMAIL»
Employer: «company», monthly income «amount»
Previous landlord: «NAME2», tel. «PHONE2»
Co-applicant: «NAME3», date of birth «DOB3»
Application fee paid with card «CARD»
Signature: «NAME»    Date: «date»"""),
    _t("mieter/de_selbstauskunft", "train", """
Mieterselbstauskunft - Wohnung in «city»
Name: «NAME»
Geburtsdatum: «DOB»
Derzeitige Anschrift: «ADDRESS»
Telefon: «PHONE», E-Mail: «EMAIL»
Arbeitgeber: «company», beschäftigt seit «year», Nettoeinkommen «amount» im Monat
Bisheriger Vermieter: «NAME2», Tel. «PHONE2»
Ich versichere die Richtigkeit meiner Angaben. Datum: «date»""", DE),
    _t("inscription/fr_ecole", "train", """
Fiche d'inscription - année scolaire «year»
Élève : «NAME», né(e) le «DOB»
Responsable légal : «NAME2»
Adresse : «ADDRESS2»
Téléphone : «PHONE2» - Courriel : «EMAIL2»
Personne à prévenir en cas d'urgence : «NAME3», «PHONE3»
Fait à «city», le «date»""", FR),
    _t("ruzhi/zh_dengji", "train", """
员工入职登记表
姓名：«NAME»
出生日期：«DOB»
身份证号：«SSN»
手机：«PHONE»
电子邮箱：«EMAIL»
现住址：«ADDRESS»
紧急联系人：«NAME2»，电话«PHONE2»
入职日期：«date»""", ZH),
    _t("kaiin/ja_touroku", "train", """
【会員登録内容のご確認】
«NAME» 様
«company»オンラインストアにご登録いただきありがとうございます。
お名前：«NAME»
生年月日：«DOB»
ご住所：«ADDRESS»
電話番号：«PHONE»
メールアドレス：«EMAIL»
ログインID：«USERNAME»
ご登録日：«date»""", JA),
    _t("phoneorder/card_note", "train", """
Phone order «order» taken by agent «agentid» at «time»
Customer: «NAME», callback «PHONE»
Card: «CARD», exp «01/27|09/26|12/28|04/29» (CVV not stored)
Billing address: «ADDRESS»
Deliver to: «ADDRESS2» (gift for «FIRST2»)
Total «amount», «plan» plan upgrade included"""),
    # --- long documents with many entities ------------------------------------------------------
    _t("memo/relocation", "train", """
CONFIDENTIAL - relocation package

To: «NAME2», Global Mobility
From: «NAME3»
Date: «date»

«NAME» («empid») moves from our «city» office to «city2» on «date». Please book temporary housing for four weeks; «FIRST» can be reached on «PHONE» or at «EMAIL» while travelling.

For the work permit we need a copy of the passport and the date of birth, «DOB». The current home address is «ADDRESS»; the removal company will collect from there.

The relocation allowance of «amount» should be paid to «IBAN». Questions go to «FIRST3» directly, not to the shared mobility mailbox."""),
    _t("minutes/residents", "train", """
Residents' association - minutes of the «year» annual meeting
Held on «date» in the community room, «city».

Present: «NAME» (chair), «NAME2» (treasurer), «NAME3», «NAME4»
Apologies: «NAME5»

1. Treasurer's report. «FIRST2» reported a balance of «amount». Members who have not paid the annual fee can transfer it to «IBAN2» with their flat number as reference.

2. Noise. «FIRST3» (living at «ADDRESS3») raised the late-night noise again; «FIRST» will write to the building manager.

3. Contacts. The new caretaker is «NAME6», reachable on «PHONE6». The minutes will be sent by «FIRST» from «EMAIL».

Next meeting: «date»."""),
    _t("booking/itinerary", "train", """
Booking confirmation «order»
Thank you for booking with us.

Passengers
1. «NAME» - date of birth «DOB» - passport «SSN»
2. «NAME2» - date of birth «DOB2» - passport «SSN2»

Outbound: «date» «time», «city» → «city2»
Return: «date» «time»

Lead passenger contact: «EMAIL», «PHONE»
Paid: «amount» with card «CARD»
Billing address: «ADDRESS»

Please check that the names match the travel documents exactly."""),
    _t("secreport/phishing", "train", """
Security investigation «ticket» - credential phishing

Summary: on «date», «num» employees received a fake «product» login page. Two of them entered their credentials.

Affected accounts:
- «USERNAME» («NAME»): login from «IP» at «time», shortly after the click
- «USERNAME2» («NAME2»): no suspicious login seen

The phishing kit posted the captured password («PASSWORD») in clear text to its collection endpoint, which is how we confirmed the first account. Both passwords were reset and all sessions revoked.

Attacker infrastructure: «IP3», «IP4». Blocked at the proxy; the internal range «10.0.0.0/8|172.16.0.0/12|192.168.0.0/16» was not reached.

Report by «NAME5». Questions to security@«domain»."""),
    # --- more hard negatives: no personal data ----------------------------------------------------
    _t("changelog/release_notes", "train", """
## «version» («date»)
- Bump «product» to «version2»; the minimum supported cluster is now «k8sver»
- Fix a retry storm in «service» (#«num», commit «hash»)
- Examples use the 192.0.2.0/24 documentation range and 127.0.0.1 instead of real hosts
- Thanks to the «company» team for the report"""),
    _t("firewall/nginx_allow", "train", """
# «service» admin endpoint, reviewed «date»
location /admin {
    allow 127.0.0.1;
    allow «10.0.0.0/8|172.16.0.0/12|192.168.0.0/16»;
    allow «100.64.0.0/10|fd00::/8|198.51.100.0/24»;
    deny all;
    proxy_pass http://127.0.0.1:«port»;
}"""),
    _t("botchat/deploy", "train", """
deploy-bot «time»: «service» «version» rolled out to «ns» (commit «hash»)
ci-bot «time»: build #«num» passed (agent version «ipver»)
deploy-bot «time»: rollback window closes «date», ping @«service»-oncall if anything looks off"""),
    _t("decoy/role_contacts", "train", """
Questions about the «product» migration? Write to support@«domain»; security issues go to security@«domain» and invoices to billing@«domain». The «company» status page is updated every «5|10|15|30» minutes, and the «city» office is staffed 9:00-17:00."""),
    _t("decoy/masked_csv", "train", """
id,name,email,ip,created
«num»,[NAME],[EMAIL],[IP_ADDRESS],«year»
«num»,«<REDACTED>|***|{customer_name}»,«<email>|[EMAIL]|***»,«[IP_ADDRESS]|<REDACTED>»,«year»
«num»,«placeholder»,«placeholder»,«placeholder»,«year»"""),
    _t("decoy/sql_ddl", "train", """
CREATE TABLE customers (
    id          bigserial PRIMARY KEY,
    full_name   text NOT NULL,
    email       text UNIQUE,
    ssn         char(11),
    iban        varchar(34),
    created_at  timestamptz DEFAULT now()
);
-- migration «hash», applied «date» on «product» «version»"""),
    _t("decoy/blank_form", "train", """
APPLICATION FORM («company», rev. «year»)
Full name: ______________________
Date of birth (DD/MM/YYYY): __/__/____
Email: ______________________   Phone: ______________
IBAN: ____ ____ ____ ____ ____
Please return by «date» to the «city» office."""),
    _t("decoy/json_trace", "train", """
{"ts":"«iso_time»","level":"«loglevel»","svc":"«service»","trace_id":"«uuid»","route":"/v«major»/orders/«order»","status":200,"ms":«num»}
{"ts":"«iso_time»","level":"«loglevel»","svc":"«service»","msg":"pool ready","db":"127.0.0.1:«port»","size":«num»,"driver":"«ipver»"}"""),
    _t("presse/de_rechenzentrum", "train", """
«company» eröffnet am «date» ein neues Rechenzentrum in «city». Die Plattform «product» «version» läuft dort ab «year»; Kunden in «city2» profitieren von geringerer Latenz.""", DE),
    _t("novedades/es_version", "train", """
La versión «version» de «product» ya está disponible. Novedades: integración con «product2», correcciones de seguridad (commit «hash») y un «pct» % más de rendimiento. Más información en la web de «company».""", ES),
    _t("oshirase/ja_maintenance", "train", """
【メンテナンスのお知らせ】«date» «time»から約«30|60|90|120»分間、«product»のメンテナンスを実施します。対象バージョン：«version»。ご不便をおかけしますが、ご了承ください。«company»""", JA),
]

# Generation 2 (2026-12-05): kinds of text the held-out-context runs showed the tagger had never seen
# (directory and contact exports, infrastructure code, registry and Secret names, passport numbers,
# numbered lists of people, four more languages). All train family, every context new.
TEMPLATES += [replace(t, generation=2) for t in [
    _t("vcard/contact", "train", """
BEGIN:VCARD
VERSION:3.0
FN:«NAME»
ORG:«company»
TEL;TYPE=cell:«PHONE»
EMAIL;TYPE=home:«EMAIL»
NOTE:met at the «product» meetup in «city», «date»
END:VCARD"""),
    _t("calendar/ics_invite", "train", """
BEGIN:VEVENT
SUMMARY:«product» «quarterly review|planning|retro»
UID:«uuid»
ORGANIZER;CN=«NAME»:mailto:«EMAIL»
ATTENDEE;CN=«NAME2»;ROLE=REQ-PARTICIPANT:mailto:«EMAIL2»
ATTENDEE;CN=«company» room «num»;CUTYPE=ROOM:mailto:room-«num»@«domain»
LOCATION:«company» office, «city»
END:VEVENT"""),
    _t("ldap/ldif_people", "train", """
dn: uid=«USERNAME»,ou=people,dc=«org»,dc=com
objectClass: inetOrgPerson
uid: «USERNAME»
cn: «NAME»
mail: «EMAIL»
telephoneNumber: «PHONE»
userPassword: «PASSWORD»
departmentNumber: «num»"""),
    _t("unixpasswd/etc_passwd", "train", """
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
«USERNAME»:x:1001:1001:«NAME»,,,:/home/«USERNAME»:/bin/bash
«USERNAME2»:x:1002:1002:«NAME2»,Room «num»,«PHONE2»,:/home/«USERNAME2»:/bin/zsh"""),
    _t("inventory/ansible_hosts", "train", """
[«service»]
«IP» ansible_user=«USERNAME» ansible_ssh_pass=«PASSWORD»
«IP2» ansible_user=«USERNAME» ansible_become=true

[local]
localhost ansible_connection=local"""),
    _t("tfvars/prod", "train", """
region         = "«eu-central-1|us-east-1|ap-northeast-1»"
instance_type  = "t3.medium"
admin_email    = "«EMAIL»"
db_username    = "«USERNAME»"
db_password    = "«TOKEN»"
allowed_cidrs  = ["10.0.0.0/8"]
owner          = "«NAME»"
cost_center    = "«recid»\""""),
    _t("registry/pull_secret_cmd", "train", """
$ kubectl create secret docker-registry «secretname» \\
    --docker-server=«registry» \\
    --docker-username=«USERNAME» \\
    --docker-password=«TOKEN» \\
    --docker-email=«EMAIL» -n «ns»
secret/«secretname» created"""),
    _t("claim/insurance", "train", """
CLAIM FORM - «company» Insurance
Policyholder: «NAME»    Date of birth: «DOB»
Member ID: «SSN»
Contact: «PHONE» / «EMAIL»
Home address: «ADDRESS»
Incident on «date» in «city»; estimated damage «amount». Claim no. «recid»."""),
    _t("pharmacy/label", "train", """
«company» PHARMACY   Rx #«recid»
Patient: «NAME»   DOB: «DOB»
Ibuprofen 400 mg - take 1 tablet every 8 hours with food
Qty: «num»   Refills: 2   Filled: «date»
Prescriber: «NAME2»   Tel. «PHONE2»"""),
    _t("lettera/it_affitto", "train", """
Gentile «NAME2»,
le scrivo per il contratto d'affitto. Sono «NAME», codice fiscale «SSN», attualmente residente in «ADDRESS». Può contattarmi al «PHONE» oppure a «EMAIL».
Cordiali saluti""", ("it_IT",)),
    _t("mensagem/pt_cadastro", "train", """
Olá! Segue meu cadastro atualizado:
Nome completo: «NAME»
CPF: «SSN»
Nascimento: «DOB»
Endereço: «ADDRESS»
Celular: «PHONE»""", ("pt_BR",)),
    _t("bericht/nl_huurder", "train", """
Beste «FIRST2»,
Hierbij mijn gegevens voor de huurovereenkomst: «NAME», geboren op «DOB», IBAN «IBAN». Bel me gerust op «PHONE».
Groet, «FIRST»""", ("nl_NL",)),
    _t("wiadomosc/pl_zgloszenie", "train", """
Dzień dobry, nazywam się «NAME», PESEL «SSN». Proszę o zmianę adresu na «ADDRESS». Mój e-mail: «EMAIL». Numer zamówienia: «order».""", ("pl_PL",)),
    _t("roster/numbered_signup", "train", """
Volunteers for «date» («city» cleanup):
1. «FIRST» - «PHONE»
2. «NAME2»
3. «FIRST3» (bringing gloves)
4. «NAME4» - «EMAIL4»
Meeting point: «city» main station, «time»."""),
    _t("visa/application", "train", """
VISA APPLICATION «recid»
Surname and given names: «NAME»
Date of birth: «DOB»
Passport number: «PASSPORT»   Expiry: «date»
Stay: «company» Hotel, «city»
Phone: «PHONE»"""),
    _t("travelchat/passport_check", "train", """
«FIRST»: can you book «flight» for me too? passport «PASSPORT», expires «date»
«FIRST2»: done, seat next to yours. booking ref «pnr». what's your date of birth again?
«FIRST»: «DOB»"""),
    _t("dbconn/startup_log", "train", """
«iso_time» INFO  «service» starting («version», pid «pid»)
«iso_time» DEBUG connecting to postgresql://«USERNAME»:«PASSWORD»@«IP»:5432/«service»
«iso_time» WARN  retrying connection to «IP» (attempt 2/5)
«iso_time» INFO  connected; pool size «num»"""),
    _t("forum/post_help", "train", """
Re: «product» keeps asking for my password
Posted by «USERNAME» » «date»
I'm «FIRST», same problem here since «version». I even reset it to «PASSWORD» and it still fails. If anyone from «company» reads this, call me: «PHONE»."""),
    _t("sms/courier", "train", """
«company» Delivery: parcel «order» arrives today between «time» and «time2». Address: «ADDRESS». Driver «FIRST»: «PHONE». Reply STOP to opt out."""),
    _t("payment/sepa_confirmation", "train", """
Transfer executed on «date»
Ordering party: «NAME»   IBAN «IBAN»
Beneficiary: «NAME2»   IBAN «IBAN2»
Amount: «amount»   Reference: «invoice»
Bank: «company»"""),
    # hard negatives
    _t("podspec/image_refs", "train", """
spec:
  serviceAccountName: «service»-sa
  imagePullSecrets:
    - name: «secretname»
  containers:
    - name: «service»
      image: «registry»/«org»/«service»:«version»
      env:
        - name: DB_PASSWORD
          valueFrom:
            secretKeyRef:
              name: «secretname2»
              key: password"""),
    _t("cilog/docker_push", "train", """
Run #«num» on «env» - commit «hash» by «org»-bot
Step 3/7: docker build -t «registry»/«org»/«service»:«version» .
 ---> sha256:«hash2»
Step 4/7: docker push «registry»/«org»/«service»:«version»
Pushed in 41.2s. Artifact «uuid» stored; job «recid» finished «status»."""),
    _t("describe/kubectl_pod", "train", """
Name:             «service»-7d9f8b6c5-x2lkq
Namespace:        «ns»
Service Account:  «service»-sa
Labels:           app=«service»
Containers:
  «service»:
    Image:   «registry»/«org»/«service»:«version»
    Environment:
      DB_USER:      <set to the key 'username' in secret '«secretname»'>
      DB_PASSWORD:  <set to the key 'password' in secret '«secretname»'>"""),
    _t("invoicehead/vendor", "train", """
INVOICE «invoice»    Date: «date»    Due: «date2»
«company» GmbH, registered office «city», VAT ID DE«recid»
Item                          Qty   Price
«product» licence (annual)     «num»   «amount»
Total due: «amount2». Pay by bank transfer quoting «invoice»."""),
    _t("runbook/numbered_steps", "train", """
1. Install «product» «version» on every node.
2. Restart «service» in «ns» and wait for «num» ready pods.
3. Check the dashboard at https://grafana.«domain»/d/«hash».
4. Close «ticket» and tell «org» in the channel."""),
]]
