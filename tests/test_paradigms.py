import pytest

from medlnkit.errors import InvalidParadigmError, MedlnkitError
from medlnkit.paradigms import TABLE1_PARADIGMS, TABLE2_PARADIGMS, parse_paradigm


def test_parse_canonical_and_table_spellings():
    assert str(parse_paradigm("T,LN,T")) == "T,LN,T"
    assert str(parse_paradigm("[T, LayerNorm, T]")) == "T,LN,T"
    assert str(parse_paradigm("t,attention,ffn")) == "T,Attn,FFN"
    assert str(parse_paradigm("F,F,LN,F", "llava")) == "F,F,LN,F"


def test_all_published_paradigms_parse():
    assert len(TABLE1_PARADIGMS) == 16
    assert len(TABLE2_PARADIGMS) == 14
    assert [str(parse_paradigm(p)) for p in TABLE1_PARADIGMS] == list(TABLE1_PARADIGMS)
    assert [str(parse_paradigm(p, "llava")) for p in TABLE2_PARADIGMS] == list(TABLE2_PARADIGMS)


@pytest.mark.parametrize(
    ("text", "architecture", "fragment"),
    [
        ("T,X,T", "miss", "invalid state 'X'"),
        ("T,LN", "miss", "expected 3 comma-separated states"),
        ("", "miss", "expected 3 comma-separated states"),
        ("T,,T", "miss", "expected 3 comma-separated states"),
        ("Prefix,T,T", "miss", "not supported for the miss group 'vit'"),
        ("F,LN,LN,F", "llava", "not supported for the llava group 'connector'"),
        ("F,F,LN,LoRA", "llava", "not supported for the llava group 'lm_head'"),
        ("T,LN,T", "gpt", "unknown architecture"),
    ],
)
def test_invalid_paradigms_name_value_and_choices(text, architecture, fragment):
    with pytest.raises(InvalidParadigmError) as info:
        parse_paradigm(text, architecture)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MedlnkitError)


def test_state_lookup_by_group():
    paradigm = parse_paradigm("T,LoRA,Prefix")
    assert paradigm.state("jtm") == "LoRA"
    assert paradigm.methods == {"LoRA", "Prefix"}
