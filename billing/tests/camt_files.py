"""camt.054 / camt.053 documents as Swiss banks send them, built for tests."""

from decimal import Decimal


def tx(amount, reference="", *, ref_id, name="Alice AG", iban="CH9300762011623852957", unstructured="",
       indicator=None):
    structured = (f"<Strd><CdtrRefInf><Tp><CdOrPrtry><Prtry>QRR</Prtry></CdOrPrtry></Tp><Ref>{reference}</Ref>"
                  f"</CdtrRefInf></Strd>") if reference else ""
    ustrd = f"<Ustrd>{unstructured}</Ustrd>" if unstructured else ""
    ind = f"<CdtDbtInd>{indicator}</CdtDbtInd>" if indicator else ""
    return f"""
        <TxDtls>
          <Refs><AcctSvcrRef>{ref_id}</AcctSvcrRef><EndToEndId>NOTPROVIDED</EndToEndId></Refs>
          <Amt Ccy="CHF">{amount}</Amt>{ind}
          <RltdPties><Dbtr><Pty><Nm>{name}</Nm></Pty></Dbtr><DbtrAcct><Id><IBAN>{iban}</IBAN></Id></DbtrAcct></RltdPties>
          <RmtInf>{ustrd}{structured}</RmtInf>
        </TxDtls>"""


def entry(transactions, *, indicator="CRDT", entry_ref="E1", booked="2025-02-10"):
    total = sum(Decimal(t[1]) for t in transactions) if transactions else Decimal("1.00")
    body = "".join(t[0] for t in transactions)
    return f"""
      <Ntry>
        <Amt Ccy="CHF">{total:.2f}</Amt>
        <CdtDbtInd>{indicator}</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>{booked}</Dt></BookgDt>
        <ValDt><Dt>{booked}</Dt></ValDt>
        <AcctSvcrRef>{entry_ref}</AcctSvcrRef>
        <BkTxCd/>
        <NtryDtls>{body}</NtryDtls>
      </Ntry>"""


def camt054(entries, *, message_id="MSG-1", version="08") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.{version}">
  <BkToCstmrDbtCdtNtfctn>
    <GrpHdr><MsgId>{message_id}</MsgId><CreDtTm>2025-02-10T18:00:00</CreDtTm></GrpHdr>
    <Ntfctn>
      <Id>N-{message_id}</Id>
      <Acct><Id><IBAN>CH4431999123000889012</IBAN></Id></Acct>
      {"".join(entries)}
    </Ntfctn>
  </BkToCstmrDbtCdtNtfctn>
</Document>""".encode()


def camt053(entries, *, message_id="STMT-1", version="04") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version}">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>{message_id}</MsgId><CreDtTm>2025-02-10T23:00:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>S-{message_id}</Id>
      <Acct><Id><IBAN>CH4431999123000889012</IBAN></Id></Acct>
      {"".join(entries)}
    </Stmt>
  </BkToCstmrStmt>
</Document>""".encode()


def credit(amount, reference="", *, ref_id, **kwargs):
    """(xml, amount) of one credit transfer, for entry()."""
    return tx(amount, reference, ref_id=ref_id, **kwargs), amount
