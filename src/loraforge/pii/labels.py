"""What the label right before a number on its line says it is, as Presidio's context words do: an ID after
``PESEL``, a reference after ``order`` (no personal data), an organisation's line after ``Switchboard``, a card
only where the number passes the card's check. Read by ``conform`` for any finder's spans."""

from __future__ import annotations

import re

from loraforge.data.pii_tags import spaceless
from loraforge.eval.pii_baseline import iban_ok as rules_iban_ok
from loraforge.pii.patterns import card_number_ok, national_id_ok
from loraforge.pii.spans import line_bounds
from loraforge.pii.wordlists import words as _words

# the label before a number on its line says which number it is (as Presidio's context words do)
_ID_LABEL = re.compile(r"(?i:\b(?:ssn|social security|national id|id (?:number|no\.?|card)|identity (?:number|card)|"
                       r"passport|tax id|pesel|codice fiscale|steuer-?id|steuernummer|identifikationsnummer|insurance id|member id|"
                       r"personnummer|henkilötunnus|aadhaar|medicare|medicaid|national insurance|"
                       r"s[ée]curit[ée] sociale|seguridad social|sozialversicherung\w*|codice sanitario|carteirinha|"
                       r"fødselsnummer|personnummer|emirates id|pps(?: number)?|medicare card)\b)|"
                       r"\b(?:CPF|DNI|NIE|NIF|NHS|AHV|BSN|TIN|NIR|NINO|SIN|PAN|RRN|TFN|NIP|AMKA|CCCD|CMND|CURP|RFC|INN|SNILS)\b|"
                       r"ΑΜΚΑ|ΑΦΜ|ИНН|СНИЛС|[Пп]аспорт|رقم الهوية|"  # acronyms: upper case
                       r"身份证|身分證|マイナンバー|주민등록번호|आधार")  # (Polish "nie", "dni" are words)
ID_LABEL_HEAD = re.compile(r"(?:" + _ID_LABEL.pattern + r")[ \t]*[:#]?[ \t]*(?=\d)")
ID_LABEL = _ID_LABEL  # the label alone (``PESEL``): never a name (``never_personal``)
_PHONE_LABEL = re.compile(r"(?i)\b(?:phone|tel|telephone|mobile|cell|fax|telefon|teléfono|téléphone|telefone|celular|"
                          r"handy|cellulare|telefoon)\b|电话|手机|電話|携帯|전화|휴대폰")
_CARD_LABEL = re.compile(r"(?i)\b(?:card|karte|tarjeta|carte|cartão|carta|kaart)\b|卡号|信用卡|カード|카드")
BIRTH_LABEL = re.compile(r"(?i)\b(?:dob|d\.o\.b|born|birth|birthday|geb|geboren|née?|nacid[oa]|nat[oa]|nascimento|"
                          r"nascita|urodzon[ya])\b|生年月日|出生|誕生|생년월일")
# the number of an order, ticket, parcel, medical record or meter (RULES.md: PHONE, not this)
_REFERENCE_LABEL = re.compile(r"(?i:(?<![^\W_])(?:order|ticket|invoice|numer nadania|numer przesyłki|rendelés|machtigingskenmerk|mandaatreferentie|mandatsreferenz|mandate reference|sipariş|siparis|contrato|contrat|contratto|contract|prescription|rezept|receta|ordonnance|kontonr\.?|kontonummer|обращени[яею]|заявк[аиу]|tracking|booking|case|reference|ref|receipt|shipment|parcel|claim|"
                              r"bestellung|auftrag|rechnung|pedido|factura|commande|facture|ordine|fattura|zamówienie|"
                              r"faktura|bestelling|factuur|employee (?:id|no\.?|number)|staff (?:id|no\.?|number)|"
                              r"company (?:no\.?|number)|registration (?:no\.?|number)|(?:england|wales|scotland) (?:no\.?|number)|"
                              r"UTR|arn|personalnummer|personal-?nr\.?|mitarbeiternummer|medical record|record (?:no\.?|number)|"
                              r"matricola|matricule|personeelsnummer|personeelsnr\.?|nr ewid\.?|numer ewidencyjny|numer pracownika|"
                              r"anställningsnummer|työntekijänumero|"
                              r"prontuário|meter|contador|zähler|compteur|seguimiento|env[ií]o|werkorder|трек|"
                              r"fakturanummer|nr seryjny|serial (?:no\.?|number)|protocolo|copyright|takip|ocr-nummer|meeting id|"
                              r"zählernummer|kundennr\.?|kundennummer|beleg(?:-?nr\.?|nummer)?|reserva|localizador|reservation|"
                              r"reservierung|réservation|prenotazione|rezerwacja|beställning|order(?:nummer|bekräftelse)|"
                              r"bestellnummer|auftragsnummer|vorgangsnummer|numer klienta|nr klienta|vertrags(?:konto|nummer)|merchant id|"
                              r"txn|transaction|transaktion|dossier|account (?:no\.?|number)|error_page|"
                              r"vat(?: no\.?| number)?|ust-?id(?:nr)?|buchung(?:sbestätigung|snummer)?|codice cliente|"
                              r"customer (?:no\.?|number|id)|client (?:no\.?|number)|n° client|num[ée]ro (?:de )?client|"
                              r"klantnummer|número de cliente|kundnummer|(?:micro)?chip(?:nummer| number)?|puce|"
                              # rules 40: an order's, a ticket's, a giro account's, a land registry's, an employee's
                              r"bestellnr\.?|objednávk[ayu]|заказ[а-я]*|bankgiro|plusgiro|bilet|referencia|referència|referência|"
                              r"n\.º de empleado|número de empleado|"
                              # rules 54: a utility's service account, a bank's virtual account for one payment
                              r"cuenta de servicio|número de servicio|número de suministro|virtual account|"
                              # rules 55: a Turkish registry's number, a utility's consumer number
                              r"sicil|consumer (?:no\.?|number)|"
                              # rules 56: a payment's reference (Dutch; not an insurance policy's number, often the
                              # insured's member ID: RULES.md, SSN)
                              r"betalingskenmerk|kenmerk|"
                              # rules 57: a utility's personal account, an employee's number (Russian), a Brazilian invoice
                              r"лицев\w* сч[её]т\w*|табельн\w* номер\w*|nf-e|nfs-e|nota fiscal|"
                              # rules 61: a direct debit's mandate (Italian, French, Polish)
                              r"mandato|mandat)"
                              # a reference word's compound with its number word (``Factuurnr.``, ``Ordernr.``)
                              r"(?:-?(?:nr|no|nummer)\.?)?(?![^\W_])|"
                              r"account[ _-]?id\b)|"
                              # a carrier's name, a product's or a company's code (registration numbers: RULES.md does
                              # not annotate them): their numbers follow (case as written: ``Iva`` is a name)
                              r"\b(?:FedEx|UPS|DHL|USPS|SEUR|KID|KRS|SIRET|SIREN|REGON|PO|CEP|BTW|TVA|IVA|KvK|KVK|Mersis|CIN|FINESS|IFSC|HRB|HRA|"
                              r"EORI|DUNS|LEI|CIF|CNPJ|ABN|EIN|GSTIN|UEN|Y-tunnus|CVR|IČO|CUI|КПП|ОГРН(?:ИП)?)\b|"
                              r"(?i:\borg\.? ?-?nr\b\.?|\borganisasjonsnummer\b)|"
                              r"订单|注文|사번|社員番号|工号|工单|运单|单号|账号|伝票番号|送り状番号|운송장 ?번호|예약 ?번호|주문 ?번호|"
                              r"法人番号|取引番号|会议号|追跡番号|お問い合わせ番号|처방전 ?번호|접수 ?번호|संदर्भ संख्या|处方号|処方箋番号|رقم الطلب|رقم الحجز|رقم التذكرة|طلبك رقم|شحنتك رقم|رقم الشحنة|ریفرنس نمبر|\bPNR\b|केस संख्या|खाता संख्या|लेन-देन आईडी|\bRCS\b|"
                              r"송장 ?번호|شماره پیگیری|شماره سفارش|उपभोक्ता संख्या|ग्राहक संख्या|검진 ?번호|"
                              # ``#`` right before the number (``장애 보고서 #2025-0815``): a reference's sign (rules 63)
                              r"#\Z")
# an organisation's line, not a person's (RULES.md: PHONE): a switchboard, a reception, customer service
_LONGEST_FIRST = sorted(_words("organisation_phone_labels"), key=len, reverse=True)
ORGANISATION_PHONE_LABEL = re.compile(
    r"(?i)(?<![^\W\d_])(?:" + "|".join(re.escape(w) for w in _LONGEST_FIRST if not any(spaceless(c) for c in w))
    + r")(?![^\W\d_])|" + "|".join(re.escape(w) for w in _LONGEST_FIRST if any(spaceless(c) for c in w)))
# a product's, a recording's or a publication's code: never a card or an ID, whatever its checksum (an EAN-13
# passes the Luhn check one time in ten)
_PRODUCT_CODE_LABEL = re.compile(r"\b(?:EAN|GTIN|UPC|ISBN|ISSN|ISRC|ISWC|DOI|SKU|JAN)\b|(?i:\b(?:barcode|barkod|código de barras)\b)")
_DATE_SHAPE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")
LABEL_WINDOW = 24
_IBAN_START = re.compile(r"[A-Z]{2}\d{2}")
_LABELLED_TYPES = {"PHONE", "SSN", "CREDIT_CARD"}
# None, CODE: a reference, a product's code; ORGANISATION: an organisation's phone line (before PHONE: ``客服电话``
# ends where its ``电话`` does, and the first of labels ending at one place wins)
# a meeting's ID has a phone's shape (``Zoom 921 4410 8821``, ``ID da reunião: 381 442 907 15``), and may pass an ID's check
_MEETING_LABEL = re.compile(r"(?i)\b(?:zoom|webex)\b|(?i:(?<![^\W_])(?:(?:besprechungs|konferenz|meeting)-id|"
                            r"id d[ae] reuni(?:ão|ón)|id de (?:la )?réunion)(?![^\W_]))")
# a carrier's parcel number or a bank's virtual account: the carrier's or bank's own number, a reference even where
# it passes a card's or an ID's check (``Tracking number: PLK 7714 2093 8816 GB``, ``Numer przesyłki: 6204 1937 ...``)
_CARRIER_LABEL = re.compile(r"(?i:(?<![^\W_])(?:tracking|parcel|shipment|numer nadania|numer przesyłki|przesyłka nr|sendungsnummer|"
                            r"paketnummer|n° de suivi|numéro de suivi|seguimiento|rastreio|rastreamento|tracciamento|"
                            r"kargo takip|takip|трек|virtual account)(?![^\W_]))|追跡番号|운송장 ?번호|송장 ?번호|运单")
_LABELS = (("SSN", _ID_LABEL), ("ORGANISATION", ORGANISATION_PHONE_LABEL), ("MEETING", _MEETING_LABEL), ("PHONE", _PHONE_LABEL),
           ("CREDIT_CARD", _CARD_LABEL), ("DATE_OF_BIRTH", BIRTH_LABEL), ("CARRIER", _CARRIER_LABEL), (None, _REFERENCE_LABEL),
           ("CODE", _PRODUCT_CODE_LABEL))


# a label after the number, as Turkish and Hungarian write it (``7281 0045 3392 numaralı gönderi``, ``7051184320
# számú csomagja``: the shipment numbered ...)
_REFERENCE_AFTER = re.compile(r"(?i)[ \t]+numaral[ıi][ \t]+(?:gönderi|sipariş|siparis|kargo|fatura|talep|başvuru|dosya|"
                              r"kayıt|bilet|paket|rezervasyon|poliçe|sözleşme)|"
                              r"[ \t]+számú[ \t]+(?:csomag|rendelés|megrendelés|számla|szállítmány|küldemény|jegy|foglalás)")


_CARD_PAN = re.compile(r"(?i)(?<![^\W\d_])pan(?![^\W\d_])")
# "as the order says" before a number's own label names no number (``Rückrufnummer laut Auftrag: ⟦0160 93817246⟧``,
# ``callback number as per booking: ...``): the word after it is blanked before the nearest label is read (rules 64)
_ACCORDING_TO = re.compile(r"(?i)(?<![^\W\d_])(?:laut|lt\.|gemäß|gem\.|as per|according to|selon|según|secondo)[ \t]+[^\W\d_]+")


def _labelled_type(text: str, a: int, b: int, ptype: str) -> str | None:
    """A phone, ID or card number typed as the label right before it on its line says (``SSN / national
    ID: ⟦559 581 962⟧`` is an ID even if it looks like a phone number); the nearest label wins. A card
    label needs a number that passes the Luhn check, a birth label a date; after an order or ticket
    label the number is a reference (None: not personal data), after an organisation's (``Switchboard``) a phone
    is the organisation's (None too)."""
    if ptype != "IBAN" and ptype not in _LABELLED_TYPES:
        return ptype
    before = text[max(line_bounds(text, a, a)[0], a - LABEL_WINDOW):a]
    if ptype != "IBAN" and _REFERENCE_AFTER.match(text, b) and not (card_number_ok(text[a:b]) or national_id_ok(text[a:b])):
        return None
    if ptype == "IBAN":  # only a reference's label speaks for an IBAN-shaped value (``BTW NL862233451B01``: a VAT number)
        return None if _REFERENCE_LABEL.search(before) and not rules_iban_ok(text[a:b]) else ptype
    before = _ACCORDING_TO.sub(lambda m: " " * len(m.group()), before)
    last = {label: max((m.end() for m in rx.finditer(before)), default=-1) for label, rx in _LABELS}
    label = max(last, key=last.get)
    if last[label] < 0:
        return ptype
    value = text[a:b]
    if label in ("CODE", "CARRIER") or (label in ("ORGANISATION", "MEETING") and ptype == "PHONE"):
        return None
    if label in ("ORGANISATION", "MEETING"):
        return ptype
    if label == "SSN" and card_number_ok(value) and _CARD_PAN.search(before):
        return "CREDIT_CARD"  # a card's primary account number (``full PAN at DEBUG (pan=...``); India's PAN has letters
    if label == "CREDIT_CARD" and not card_number_ok(value):
        return ptype  # "paid with card ⟦number⟧" only when the number is a card's
    if label == "DATE_OF_BIRTH" and not _DATE_SHAPE.fullmatch(value):
        return ptype
    if label is None and (card_number_ok(value) or national_id_ok(value)):
        return ptype  # a card number after "order" is still a card number, a national ID after "invoice" an ID
    return label


def retyped(text: str, a: int, b: int, ptype: str) -> str | None:
    """An "IBAN" not shaped as one is an ID number; the type by the label; then a "card" that fails the Luhn
    check is an ID number (a card number passes it; an ID of the same shape one time in ten), and one of fewer than
    12 digits is no card: an ID number with 8 letters and digits or more (``529-71-4836``, ``8170343NA``: the model
    read a personal number, typed it wrong), a phone with 7 digits (``555-1234``), nothing when shorter (``300 800``;
    RULES.md: a card's last four digits are not a card)."""
    if ptype == "IBAN" and not _IBAN_START.match(text, a) and sum(c.isdigit() for c in text[a:b]) >= 5:
        ptype = "SSN"  # an IBAN starts with a country and two digits: another ID (``BQRPR7712C``, a PAN), or a
        # reference its label names (``PAVG870923H41``; a parcel's ``JJD000390007711842031`` without one stays masked);
        # words typed IBAN keep that type (and their mask: an ID's test would drop them)
    ptype = _labelled_type(text, a, b, ptype)
    if ptype != "CREDIT_CARD":
        return ptype
    value = text[a:b]
    digits = sum(c.isdigit() for c in value)
    if digits >= 12:
        return ptype if card_number_ok(value) else "SSN"
    return "SSN" if sum(c.isalnum() for c in value) >= 8 else "PHONE" if digits >= 7 else None
