"""Structured records for the synthetic PII data: forms, CSV, JSON, YAML, SQL, HTML and log lines
built from random field schemas, labelled in ten languages.

Why: a tagger trained on a few dozen hand-written templates learns their contexts, and on contexts it
never saw it tags field labels (``お名前``), record numbers (a patient ID as a phone) and cities
(docs/benchmarks.md#pii-masking, the leave-contexts-out check). Records drawn from a grammar give
thousands of label/value/format combinations, with personal and ordinary fields side by side (IDs,
booking codes, dates, amounts, cities, companies), and records with no personal data at all. They
are written as templates (``pii_templates.Template``) so values, spans and repeated persons come
from the same filler as every other record. Train family only: ``pii:test`` is unchanged.
"""

from __future__ import annotations

import random

from loraforge.data.pii_templates import Template

LANGUAGES = {  # language -> locales of its values
    "en": ("en_US", "en_GB", "en_IN", "en_AU", "en_CA"), "de": ("de_DE",), "fr": ("fr_FR",), "es": ("es_ES", "es_MX"),
    "pt": ("pt_BR",), "it": ("it_IT",), "nl": ("nl_NL",), "zh": ("zh_CN",), "ja": ("ja_JP",), "ko": ("ko_KR",),
}
_LANG_WEIGHTS = {"en": 6, "de": 2, "fr": 2, "es": 2, "pt": 1, "it": 1, "nl": 1, "zh": 2, "ja": 2, "ko": 1}

# field kind -> (machine keys, {language: labels}); upper case = personal data (a template slot),
# lower case = an ordinary value that must stay
FIELDS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "NAME": (("name", "full_name", "customer_name", "patient", "contact_name", "guest"), {
        "en": ("Name", "Full name", "Customer", "Patient", "Guest", "Contact", "Account holder", "Employee"),
        "de": ("Name", "Vollständiger Name", "Kunde", "Patient", "Ansprechpartner"),
        "fr": ("Nom", "Nom complet", "Client", "Patient", "Titulaire"), "es": ("Nombre", "Nombre completo", "Cliente", "Paciente"),
        "pt": ("Nome", "Nome completo", "Cliente"), "it": ("Nome", "Nome e cognome", "Cliente"), "nl": ("Naam", "Klant"),
        "zh": ("姓名", "客户", "联系人", "患者"), "ja": ("お名前", "氏名", "顧客名", "担当者"), "ko": ("이름", "성명", "고객명")}),
    "FIRST": (("first_name", "given_name", "firstname"), {
        "en": ("First name", "Given name"), "de": ("Vorname",), "fr": ("Prénom",), "es": ("Nombre",), "pt": ("Primeiro nome",),
        "it": ("Nome",), "nl": ("Voornaam",), "zh": ("名",), "ja": ("名",), "ko": ("이름",)}),
    "EMAIL": (("email", "e_mail", "contact_email", "mail"), {
        "en": ("Email", "E-mail address", "Contact email"), "de": ("E-Mail", "E-Mail-Adresse"), "fr": ("Courriel", "Adresse e-mail"),
        "es": ("Correo electrónico", "Email"), "pt": ("E-mail",), "it": ("Email", "Posta elettronica"), "nl": ("E-mailadres",),
        "zh": ("电子邮件", "邮箱"), "ja": ("メールアドレス",), "ko": ("이메일",)}),
    "PHONE": (("phone", "mobile", "tel", "phone_number"), {
        "en": ("Phone", "Mobile", "Tel.", "Phone number"), "de": ("Telefon", "Handy", "Tel."), "fr": ("Téléphone", "Portable"),
        "es": ("Teléfono", "Móvil"), "pt": ("Telefone", "Celular"), "it": ("Telefono", "Cellulare"), "nl": ("Telefoon", "Mobiel"),
        "zh": ("电话", "手机号"), "ja": ("電話番号", "携帯"), "ko": ("전화번호", "휴대폰")}),
    "ADDRESS": (("address", "home_address", "billing_address", "street_address"), {
        "en": ("Address", "Home address", "Billing address"), "de": ("Anschrift", "Adresse", "Wohnadresse"),
        "fr": ("Adresse", "Adresse postale"), "es": ("Dirección", "Domicilio"), "pt": ("Endereço",), "it": ("Indirizzo",),
        "nl": ("Adres",), "zh": ("地址", "住址"), "ja": ("住所",), "ko": ("주소",)}),
    "DOB": (("dob", "date_of_birth", "birthdate", "birth_date"), {
        "en": ("Date of birth", "DOB", "Born"), "de": ("Geburtsdatum", "Geb."), "fr": ("Date de naissance", "Né(e) le"),
        "es": ("Fecha de nacimiento",), "pt": ("Data de nascimento",), "it": ("Data di nascita",), "nl": ("Geboortedatum",),
        "zh": ("出生日期",), "ja": ("生年月日",), "ko": ("생년월일",)}),
    "SSN": (("ssn", "national_id", "tax_id", "id_number"), {
        "en": ("SSN", "National ID", "Tax ID"), "de": ("Steuer-ID", "Sozialversicherungsnummer"), "fr": ("N° de sécurité sociale",),
        "es": ("DNI", "NIF"), "pt": ("CPF",), "it": ("Codice fiscale",), "nl": ("BSN",), "zh": ("身份证号",),
        "ja": ("マイナンバー",), "ko": ("주민등록번호",)}),
    "CARD": (("card_number", "cc_number", "pan"), {
        "en": ("Card number", "Credit card"), "de": ("Kartennummer", "Kreditkarte"), "fr": ("Numéro de carte",),
        "es": ("Número de tarjeta",), "pt": ("Número do cartão",), "it": ("Numero carta",), "nl": ("Kaartnummer",),
        "zh": ("卡号", "信用卡号"), "ja": ("カード番号",), "ko": ("카드번호",)}),
    "IBAN": (("iban", "bank_account"), {
        "en": ("IBAN", "Bank account"), "de": ("IBAN", "Bankverbindung"), "fr": ("IBAN", "RIB"), "es": ("IBAN", "Cuenta bancaria"),
        "pt": ("IBAN",), "it": ("IBAN", "Conto corrente"), "nl": ("IBAN", "Rekeningnummer"), "zh": ("IBAN", "银行账号"),
        "ja": ("IBAN", "口座番号"), "ko": ("IBAN", "계좌번호")}),
    "IP": (("ip", "client_ip", "remote_addr", "source_ip"), {
        "en": ("IP address", "Client IP", "Last login IP"), "de": ("IP-Adresse",), "fr": ("Adresse IP",), "es": ("Dirección IP",),
        "pt": ("Endereço IP",), "it": ("Indirizzo IP",), "nl": ("IP-adres",), "zh": ("IP地址", "登录IP"), "ja": ("IPアドレス",),
        "ko": ("IP 주소",)}),
    "USERNAME": (("username", "user", "login", "handle"), {
        "en": ("Username", "Login", "User ID"), "de": ("Benutzername", "Login"), "fr": ("Identifiant", "Nom d'utilisateur"),
        "es": ("Usuario", "Nombre de usuario"), "pt": ("Usuário",), "it": ("Nome utente",), "nl": ("Gebruikersnaam",),
        "zh": ("用户名", "账号"), "ja": ("ユーザー名", "ログインID"), "ko": ("아이디", "사용자명")}),
    "PASSWORD": (("password", "passwd", "secret", "api_key"), {
        "en": ("Password", "Temporary password", "API key"), "de": ("Passwort", "Kennwort"), "fr": ("Mot de passe",),
        "es": ("Contraseña",), "pt": ("Senha",), "it": ("Password",), "nl": ("Wachtwoord",), "zh": ("密码",),
        "ja": ("パスワード",), "ko": ("비밀번호",)}),
    # ordinary values: record numbers, codes, dates, places, organisations
    "recid": (("id", "patient_id", "customer_id", "member_no", "record_id"), {
        "en": ("ID", "Patient ID", "Customer no.", "Member number"), "de": ("Kundennummer", "Patienten-Nr.", "ID"),
        "fr": ("N° client", "Identifiant dossier"), "es": ("N.º de cliente", "ID"), "pt": ("Código do cliente",),
        "it": ("Codice cliente",), "nl": ("Klantnummer",), "zh": ("客户编号", "病历号"), "ja": ("会員番号", "患者ID"),
        "ko": ("회원번호", "고객번호")}),
    "order": (("order_id", "order_no"), {
        "en": ("Order", "Order number"), "de": ("Bestellnummer",), "fr": ("N° de commande",), "es": ("Pedido",),
        "pt": ("Pedido",), "it": ("Ordine",), "nl": ("Bestelnummer",), "zh": ("订单号",), "ja": ("注文番号",), "ko": ("주문번호",)}),
    "pnr": (("booking_ref", "pnr", "confirmation"), {
        "en": ("Booking reference", "Confirmation code"), "de": ("Buchungscode",), "fr": ("Référence de réservation",),
        "es": ("Localizador",), "pt": ("Código da reserva",), "it": ("Codice prenotazione",), "nl": ("Boekingscode",),
        "zh": ("预订编号",), "ja": ("予約番号",), "ko": ("예약번호",)}),
    "flight": (("flight", "flight_no"), {
        "en": ("Flight",), "de": ("Flug",), "fr": ("Vol",), "es": ("Vuelo",), "pt": ("Voo",), "it": ("Volo",), "nl": ("Vlucht",),
        "zh": ("航班",), "ja": ("便名",), "ko": ("항공편",)}),
    "date": (("created_at", "date", "appointment", "check_in"), {
        "en": ("Date", "Created", "Appointment", "Check-in"), "de": ("Datum", "Termin", "Erstellt am"), "fr": ("Date", "Rendez-vous"),
        "es": ("Fecha", "Cita"), "pt": ("Data",), "it": ("Data", "Appuntamento"), "nl": ("Datum", "Afspraak"),
        "zh": ("日期", "预约时间"), "ja": ("日付", "予約日"), "ko": ("날짜", "예약일")}),
    "amount": (("amount", "total", "balance"), {
        "en": ("Amount", "Total", "Balance"), "de": ("Betrag", "Summe"), "fr": ("Montant", "Total"), "es": ("Importe", "Total"),
        "pt": ("Valor",), "it": ("Importo",), "nl": ("Bedrag",), "zh": ("金额",), "ja": ("金額", "合計"), "ko": ("금액",)}),
    "city": (("city", "branch", "destination"), {
        "en": ("City", "Branch", "Destination"), "de": ("Stadt", "Filiale", "Reiseziel"), "fr": ("Ville", "Agence"),
        "es": ("Ciudad", "Sucursal"), "pt": ("Cidade",), "it": ("Città",), "nl": ("Plaats",), "zh": ("城市", "目的地"),
        "ja": ("都市", "支店"), "ko": ("도시", "지점")}),
    "company": (("company", "employer", "vendor"), {
        "en": ("Company", "Employer", "Vendor"), "de": ("Firma", "Arbeitgeber"), "fr": ("Société", "Employeur"),
        "es": ("Empresa",), "pt": ("Empresa",), "it": ("Azienda",), "nl": ("Bedrijf",), "zh": ("公司",), "ja": ("会社名",),
        "ko": ("회사",)}),
    "product": (("product", "plan", "service"), {
        "en": ("Product", "Plan", "Service"), "de": ("Produkt", "Tarif"), "fr": ("Produit", "Offre"), "es": ("Producto",),
        "pt": ("Produto",), "it": ("Prodotto",), "nl": ("Product",), "zh": ("产品",), "ja": ("製品", "プラン"), "ko": ("상품",)}),
    "status": (("status", "state"), {
        "en": ("Status",), "de": ("Status",), "fr": ("Statut",), "es": ("Estado",), "pt": ("Status",), "it": ("Stato",),
        "nl": ("Status",), "zh": ("状态",), "ja": ("ステータス",), "ko": ("상태",)}),
    "last4": (("card_last4", "last4"), {
        "en": ("Card ending", "Last 4"), "de": ("Karte endet auf",), "fr": ("Carte se terminant par",), "es": ("Tarjeta terminada en",),
        "pt": ("Cartão final",), "it": ("Carta che termina con",), "nl": ("Kaart eindigend op",), "zh": ("卡号后四位",),
        "ja": ("カード下4桁",), "ko": ("카드 끝자리",)}),
    "num": (("qty", "count", "nights", "room"), {
        "en": ("Quantity", "Nights", "Room"), "de": ("Anzahl", "Zimmer"), "fr": ("Quantité", "Chambre"), "es": ("Cantidad", "Habitación"),
        "pt": ("Quantidade",), "it": ("Quantità",), "nl": ("Aantal",), "zh": ("数量", "房间"), "ja": ("数量", "部屋"), "ko": ("수량",)}),
}
PERSONAL = [k for k in FIELDS if k.isupper()]
ORDINARY = [k for k in FIELDS if not k.isupper()]
FORMATS = ("kv", "yaml", "json", "csv", "markdown", "sql", "html", "logfmt")
_TABLES = ("customers", "patients", "bookings", "users", "members", "orders", "contacts")


def _quoted(kind: str) -> bool:
    """Fields whose values may hold spaces or commas: quoted in CSV and logfmt."""
    return kind in ("ADDRESS", "NAME", "DOB", "city", "company", "product", "date", "status")


def template(rng: random.Random, negative: bool) -> Template:
    """One record template: a random schema (2-7 fields; with ``negative``, ordinary fields only),
    one to four rows in a table-like format, labels in one language."""
    lang = rng.choices(list(_LANG_WEIGHTS), list(_LANG_WEIGHTS.values()))[0]
    fmt = rng.choice(FORMATS)
    n_fields = rng.randint(2, 7)
    if negative:
        kinds = rng.sample(ORDINARY, n_fields)
    else:
        n_personal = rng.randint(1, n_fields)  # n_fields <= 7 < len(PERSONAL)
        kinds = rng.sample(PERSONAL, n_personal) + rng.sample(ORDINARY, n_fields - n_personal)
        rng.shuffle(kinds)
    if "NAME" in kinds and "FIRST" in kinds:
        kinds.remove("FIRST")
    rows = rng.choice([1, 1, 1, 2, 3, 4]) if fmt in ("csv", "markdown", "sql", "html", "json") else 1
    machine = fmt in ("json", "yaml", "sql", "logfmt") or (fmt == "csv" and rng.random() < 0.5)
    heads = [rng.choice(FIELDS[k][0]) if machine else rng.choice(FIELDS[k][1][lang]) for k in kinds]
    # another row is another instance of each field: another person («NAME2»), another city («city2»)
    slot_rows = [[f"«{k}{'' if r == 0 else r + 1}»" for k in kinds] for r in range(rows)]
    text = _render(fmt, heads, slot_rows, kinds, rng, lang)
    return Template(f"records/{fmt}-{lang}", "train", text, LANGUAGES[lang])


def _render(fmt: str, heads: list[str], rows: list[list[str]], kinds: list[str], rng: random.Random, lang: str) -> str:
    q = lambda k, s: f'"{s}"' if _quoted(k) else s  # noqa: E731 - CSV/logfmt quoting of free text
    if fmt == "kv":
        sep = rng.choice(["：", ": "] if lang in ("zh", "ja") else [": ", ":\t", " - ", " = "])
        return "\n".join(f"{h}{sep}{s}" for h, s in zip(heads, rows[0]))
    if fmt == "yaml":
        root = rng.choice(_TABLES)[:-1]
        return f"{root}:\n" + "\n".join(f"  {h}: {s}" for h, s in zip(heads, rows[0]))
    if fmt == "json":
        objs = ["{" + ", ".join(f'"{h}": "{s}"' for h, s in zip(heads, r)) + "}" for r in rows]
        return objs[0] if len(objs) == 1 else "[\n  " + ",\n  ".join(objs) + "\n]"
    if fmt == "csv":
        d = rng.choice([",", ";", "\t"])
        return "\n".join([d.join(heads)] + [d.join(q(k, s) for k, s in zip(kinds, r)) for r in rows])
    if fmt == "markdown":
        return "\n".join(["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)] +
                         ["| " + " | ".join(r) + " |" for r in rows])
    if fmt == "sql":
        values = ",\n  ".join("(" + ", ".join(f"'{s}'" for s in r) + ")" for r in rows)
        return f"INSERT INTO {rng.choice(_TABLES)} ({', '.join(heads)}) VALUES\n  {values};"
    if fmt == "html":
        head = "<tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"
        return "<table>\n" + "\n".join([head] + ["<tr>" + "".join(f"<td>{s}</td>" for s in r) + "</tr>" for r in rows]) + "\n</table>"
    # logfmt
    level = rng.choice(["info", "warn", "debug"])
    return f"ts=«iso_time» level={level} msg={rng.choice(['login', 'signup', 'profile.update', 'checkout'])} " + " ".join(
        f"{h}={q(k, s)}" for h, k, s in zip(heads, kinds, rows[0]))
