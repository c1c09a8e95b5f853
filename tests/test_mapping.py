"""LabelMapping: lookups, validation, attribute-access rule, JSON, protocol, immutability."""

from __future__ import annotations

import copy
import json
import pickle
import re

import numpy as np
import pytest

from medmask import LabelMapping, LabelNotFoundError, MedmaskError
from medmask.mapping import MAX_LABEL, label_of, mapping_items, name_of

ORGANS = {"liver": 1, "spleen": 2, "kidney_left": 3}

# Every public attribute of LabelMapping: a label of that name must never shadow it and must
# never be silently answered by it.
PUBLIC_ATTRIBUTES = sorted(a for a in dir(LabelMapping) if not a.startswith("_"))


@pytest.fixture
def organs() -> LabelMapping:
    return LabelMapping(ORGANS)


# --- lookups ------------------------------------------------------------------------------------


def test_lookup_by_item_attribute_and_call(organs: LabelMapping) -> None:
    assert organs["liver"] == 1
    assert organs.spleen == 2
    assert organs("kidney_left") == 3


def test_inverse(organs: LabelMapping) -> None:
    assert organs.inverse(1) == "liver"
    assert organs.inverse(2) == "spleen"
    assert organs.inverse(np.uint8(3)) == "kidney_left"


@pytest.mark.parametrize("label", [0, 4, 2**32 - 1, -1, 1.0, 2.5, "1", True, None])
def test_inverse_of_unknown_or_non_integer_value_raises(
    organs: LabelMapping, label: object
) -> None:
    with pytest.raises(
        LabelNotFoundError, match=r"No label with value .*Known values: \[1, 2, 3\]"
    ):
        organs.inverse(label)  # type: ignore[arg-type]


def test_has_label(organs: LabelMapping) -> None:
    assert organs.has_label(1)
    assert organs.has_label(np.int64(3))
    assert organs.has_label(np.uint32(2))
    assert not organs.has_label(0)
    assert not organs.has_label(9)


@pytest.mark.parametrize("label", [1.0, 1.5, "1", True, np.True_, None, [1]])
def test_has_label_is_false_for_non_integers(organs: LabelMapping, label: object) -> None:
    assert organs.has_label(label) is False  # type: ignore[arg-type]


def test_has_name_and_contains(organs: LabelMapping) -> None:
    assert organs.has_name("liver")
    assert not organs.has_name("Liver")
    assert "spleen" in organs
    assert "heart" not in organs
    assert 1 not in organs  # `in` tests names, not values


def test_views_keep_insertion_order() -> None:
    m = LabelMapping([("b", 5), ("a", 9), ("c", 1)])
    assert m.items() == [("b", 5), ("a", 9), ("c", 1)]
    assert m.names() == ["b", "a", "c"]
    assert m.labels() == [5, 9, 1]
    assert list(m) == ["b", "a", "c"]
    assert len(m) == 3
    assert m.max_label() == 9
    assert m.to_dict() == {"b": 5, "a": 9, "c": 1}


def test_views_are_copies(organs: LabelMapping) -> None:
    organs.items().append(("x", 9))
    organs.names().append("x")
    organs.labels().append(9)
    organs.to_dict()["x"] = 9
    assert organs.to_dict() == ORGANS
    assert len(organs) == 3


def test_iteration_while_building_another_mapping(organs: LabelMapping) -> None:
    assert {name: organs[name] for name in organs} == ORGANS


def test_empty_mapping() -> None:
    for m in (LabelMapping(), LabelMapping(None), LabelMapping({}), LabelMapping([])):
        assert len(m) == 0
        assert list(m) == []
        assert m.items() == []
        assert m.max_label() == 0
        assert m == LabelMapping()


def test_accepts_pairs_mapping_and_label_mapping() -> None:
    from_pairs = LabelMapping([("liver", 1), ["spleen", 2], ("kidney_left", 3)])
    assert from_pairs == LabelMapping(ORGANS)
    assert LabelMapping(from_pairs) == from_pairs


def test_accepts_label_mapping_with_label_named_like_a_method() -> None:
    odd = LabelMapping({"items": 1, "inverse": 2})
    assert LabelMapping(odd) == odd


def test_numpy_integer_values_are_accepted_and_stored_as_int() -> None:
    m = LabelMapping({"a": np.uint8(1), "b": np.int64(2), "c": np.uint32(MAX_LABEL)})
    assert m.to_dict() == {"a": 1, "b": 2, "c": MAX_LABEL}
    assert all(type(v) is int for v in m.labels())
    assert m.to_json() == '{"a": 1, "b": 2, "c": 4294967295}'


def test_boundary_values_are_accepted() -> None:
    m = LabelMapping({"background": 0, "top": 2**32 - 1})
    assert m["background"] == 0
    assert m.inverse(2**32 - 1) == "top"


def test_copies_its_input() -> None:
    source = {"liver": 1, "spleen": 2}
    m = LabelMapping(source)
    source["liver"] = 7
    source["heart"] = 3
    del source["spleen"]
    assert m.to_dict() == {"liver": 1, "spleen": 2}
    pairs = [("liver", 1)]
    m2 = LabelMapping(pairs)
    pairs.append(("spleen", 2))
    assert len(m2) == 1


def test_with_label_returns_new_mapping(organs: LabelMapping) -> None:
    bigger = organs.with_label("heart", 4)
    assert bigger["heart"] == 4
    assert len(bigger) == 4
    assert "heart" not in organs
    with pytest.raises(ValueError, match="Duplicate label value 1"):
        organs.with_label("heart", 1)
    with pytest.raises(ValueError, match="Duplicate label name 'liver'"):
        organs.with_label("liver", 9)


# --- unknown names and attributes ---------------------------------------------------------------


def test_unknown_name_raises_label_not_found_with_close_matches(organs: LabelMapping) -> None:
    with pytest.raises(LabelNotFoundError, match=r"No label named 'livr'\. Did you mean 'liver'\?"):
        organs["livr"]
    with pytest.raises(KeyError, match="Did you mean 'spleen'"):
        organs("splen")
    with pytest.raises(KeyError) as info:
        organs["kidney_lft"]
    assert isinstance(info.value, MedmaskError)
    # shown as written, not repr()-quoted like a plain KeyError
    assert str(info.value) == "No label named 'kidney_lft'. Did you mean 'kidney_left'?"


def test_unknown_name_without_close_match_has_no_hint(organs: LabelMapping) -> None:
    with pytest.raises(LabelNotFoundError) as info:
        organs["pancreas"]
    assert str(info.value) == "No label named 'pancreas'."


@pytest.mark.parametrize("key", [1, None, ("liver",), ["liver"], b"liver"])
def test_non_string_keys_raise_label_not_found(organs: LabelMapping, key: object) -> None:
    with pytest.raises(LabelNotFoundError, match="No label named"):
        organs[key]  # type: ignore[index]


def test_unknown_attribute_raises_attribute_error_with_hint(organs: LabelMapping) -> None:
    with pytest.raises(
        AttributeError, match=r"no attribute or label 'livr'\. Did you mean 'liver'"
    ):
        _ = organs.livr
    with pytest.raises(AttributeError, match=r"no attribute or label 'pancreas'\.$"):
        _ = organs.pancreas
    assert not hasattr(organs, "pancreas")
    assert not hasattr(organs, "__array_interface__")


@pytest.mark.parametrize("attr", PUBLIC_ATTRIBUTES)
def test_label_named_like_public_attribute_is_never_returned_by_attribute(attr: str) -> None:
    m = LabelMapping({attr: 5, "liver": 1})
    with pytest.raises(AttributeError, match=rf"use mapping\['{attr}'\] for the label"):
        getattr(m, attr)
    assert m[attr] == 5
    assert m(attr) == 5
    assert m.liver == 1


def test_methods_stay_reachable_through_the_class_when_shadowed() -> None:
    m = LabelMapping({"items": 7, "inverse": 8, "names": 9, "labels": 10, "to_json": 11})
    assert LabelMapping.items(m) == [
        ("items", 7),
        ("inverse", 8),
        ("names", 9),
        ("labels", 10),
        ("to_json", 11),
    ]
    assert LabelMapping.inverse(m, 8) == "inverse"
    assert LabelMapping.names(m) == ["items", "inverse", "names", "labels", "to_json"]
    assert LabelMapping.labels(m) == [7, 8, 9, 10, 11]
    assert LabelMapping.from_json(LabelMapping.to_json(m)) == m
    assert mapping_items(m) == LabelMapping.items(m)
    assert label_of(m, "items") == 7
    assert name_of(m, 9) == "names"


def test_attribute_rule_does_not_affect_other_mappings() -> None:
    LabelMapping({"items": 1})
    assert LabelMapping(ORGANS).items() == list(ORGANS.items())


# --- validation: one failing input per rule -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("", ValueError, "Expected a non-empty label name. Got ''."),
        ("  ", ValueError, "Expected a non-empty label name. Got '  '."),
        ("\t\n", ValueError, "Expected a non-empty label name."),
        (1, TypeError, "Expected a label name of type str. Got int: 1."),
        (None, TypeError, "Expected a label name of type str. Got NoneType: None."),
        (b"liver", TypeError, "Expected a label name of type str. Got bytes"),
        (1.5, TypeError, "Expected a label name of type str. Got float"),
        (("liver",), TypeError, "Expected a label name of type str. Got tuple"),
    ],
    ids=["empty", "blank", "whitespace", "int", "none", "bytes", "float", "tuple"],
)
def test_rejects_bad_name(name: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=rf"^{re.escape(message)}"):
        LabelMapping([(name, 1)])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (True, TypeError, "Expected a label value of type int. Got bool: True."),
        (False, TypeError, "Expected a label value of type int. Got bool: False."),
        (np.True_, TypeError, "Expected a label value of type int. Got bool"),
        (1.0, TypeError, "Expected a label value of type int. Got float: 1.0."),
        (2.5, TypeError, "Expected a label value of type int. Got float: 2.5."),
        (np.float32(1), TypeError, "Expected a label value of type int. Got float32"),
        ("1", TypeError, "Expected a label value of type int. Got str: '1'."),
        (None, TypeError, "Expected a label value of type int. Got NoneType: None."),
        (-1, ValueError, "Expected a label value in [0, 4294967295]. Got -1."),
        (np.int8(-3), ValueError, "Expected a label value in [0, 4294967295]. Got -3."),
        (2**32, ValueError, "Expected a label value in [0, 4294967295]. Got 4294967296."),
        (np.uint64(2**40), ValueError, "Expected a label value in [0, 4294967295]. Got 1099"),
    ],
    ids=[
        "true",
        "false",
        "np-bool",
        "float-integral",
        "float",
        "np-float",
        "str",
        "none",
        "negative",
        "np-negative",
        "2**32",
        "np-uint64-huge",
    ],
)
def test_rejects_bad_value(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=rf"^{re.escape(message)}"):
        LabelMapping({"liver": value})  # type: ignore[dict-item]


def test_rejects_duplicate_value() -> None:
    with pytest.raises(
        ValueError, match=r"^Duplicate label value 1: used by 'liver' and 'spleen'\.$"
    ):
        LabelMapping({"liver": 1, "spleen": 1})


def test_rejects_duplicate_numpy_and_python_value() -> None:
    with pytest.raises(ValueError, match="Duplicate label value 2"):
        LabelMapping({"liver": 2, "spleen": np.uint16(2)})


def test_rejects_duplicate_name_in_pairs() -> None:
    with pytest.raises(ValueError, match=r"^Duplicate label name 'liver'\.$"):
        LabelMapping([("liver", 1), ("liver", 2)])


@pytest.mark.parametrize(
    "pairs",
    [[("liver",)], [("liver", 1, 2)], ["ab"], [{"liver": 1}], "liver"],
    ids=["one-element", "three-elements", "string-pair", "dict-pair", "string"],
)
def test_rejects_malformed_pairs(pairs: object) -> None:
    with pytest.raises(TypeError, match=r"^Expected \(name, value\) pairs\. Got "):
        LabelMapping(pairs)  # type: ignore[arg-type]


# --- JSON ---------------------------------------------------------------------------------------


def test_json_round_trip(organs: LabelMapping) -> None:
    text = organs.to_json()
    assert json.loads(text) == ORGANS
    assert LabelMapping.from_json(text) == organs
    assert LabelMapping.from_json(text).items() == organs.items()  # order kept
    assert LabelMapping.from_json(text.encode()) == organs


def test_json_round_trip_non_ascii_and_empty() -> None:
    m = LabelMapping({"Leber ü": 1, "脾臓": 2, "a b/c": 3})
    assert '"Leber ü"' in m.to_json()
    assert LabelMapping.from_json(m.to_json()) == m
    assert LabelMapping.from_json(LabelMapping().to_json()) == LabelMapping()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Expected a JSON object of name -> label value. Expecting value"),
        ("{", "Expected a JSON object of name -> label value. Expecting property name"),
        ('{"liver": 1,}', "Expected a JSON object of name -> label value."),
        ("not json", "Expected a JSON object of name -> label value. Expecting value"),
        (b"\xff\xfe\xfa", "Expected a JSON object of name -> label value."),
        ("[1, 2]", "Expected a JSON object of name -> label value. Got [1, 2]."),
        ("1", "Expected a JSON object of name -> label value. Got 1."),
        ("null", "Expected a JSON object of name -> label value. Got None."),
        ('"liver"', "Expected a JSON object of name -> label value. Got 'liver'."),
        ('{"liver": 1, "liver": 2}', "Duplicate label name 'liver' in JSON."),
        ('{"liver": 1, "spleen": 1}', "Duplicate label value 1: used by 'liver' and 'spleen'."),
        ('{"liver": "1"}', "Expected a label value of type int. Got str: '1'."),
        ('{"liver": 1.5}', "Expected a label value of type int. Got float: 1.5."),
        ('{"liver": 1.0}', "Expected a label value of type int. Got float: 1.0."),
        ('{"liver": true}', "Expected a label value of type int. Got bool: True."),
        ('{"liver": null}', "Expected a label value of type int. Got NoneType: None."),
        ('{"liver": [1]}', "Expected a label value of type int. Got list: [1]."),
        ('{"liver": NaN}', "Expected a label value of type int. Got float: nan."),
        ('{"liver": -1}', "Expected a label value in [0, 4294967295]. Got -1."),
        ('{"liver": 4294967296}', "Expected a label value in [0, 4294967295]. Got 4294967296."),
        ('{"": 1}', "Expected a non-empty label name. Got ''."),
        ('{" ": 1}', "Expected a non-empty label name. Got ' '."),
    ],
    ids=[
        "empty-text",
        "truncated",
        "trailing-comma",
        "not-json",
        "not-utf8",
        "array",
        "number",
        "null",
        "string",
        "duplicate-key",
        "duplicate-value",
        "string-value",
        "float-value",
        "integral-float-value",
        "bool-value",
        "null-value",
        "list-value",
        "nan-value",
        "negative-value",
        "too-large-value",
        "empty-name",
        "blank-name",
    ],
)
def test_from_json_rejects_bad_input_with_value_error(text: str | bytes, message: str) -> None:
    # bad content of a JSON document is always a ValueError, whatever the cause
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}"):
        LabelMapping.from_json(text)


# --- protocol -----------------------------------------------------------------------------------


def test_equality_is_order_insensitive() -> None:
    a = LabelMapping({"liver": 1, "spleen": 2})
    b = LabelMapping([("spleen", 2), ("liver", 1)])
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: "x"}[b] == "x"


@pytest.mark.parametrize(
    "other",
    [
        {"liver": 1},
        {"liver": 1, "spleen": 3},
        {"liver": 1, "spleen2": 2},
        {"liver": 2, "spleen": 1},
    ],
)
def test_inequality(other: dict[str, int]) -> None:
    a = LabelMapping({"liver": 1, "spleen": 2})
    assert a != LabelMapping(other)


def test_not_equal_to_other_types() -> None:
    a = LabelMapping({"liver": 1})
    assert a != {"liver": 1}
    assert a != [("liver", 1)]
    assert a != "LabelMapping({'liver': 1})"


def test_repr_shows_the_mapping_and_evaluates_back(organs: LabelMapping) -> None:
    text = repr(organs)
    assert text == "LabelMapping({'liver': 1, 'spleen': 2, 'kidney_left': 3})"
    assert eval(text, {"LabelMapping": LabelMapping}) == organs


def test_immutable(organs: LabelMapping) -> None:
    with pytest.raises(AttributeError, match="LabelMapping is immutable"):
        organs.liver = 5  # type: ignore[misc]
    with pytest.raises(AttributeError, match="LabelMapping is immutable"):
        organs.heart = 4  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="LabelMapping is immutable"):
        setattr(organs, "_name_to_label", {})  # noqa: B010
    with pytest.raises(TypeError):
        organs["liver"] = 5  # type: ignore[index]
    with pytest.raises(AttributeError):
        del organs.liver
    assert organs.to_dict() == ORGANS


@pytest.mark.parametrize(
    "mapping",
    [{}, ORGANS, {"items": 7, "inverse": 8, "__x": 9}, {"top": MAX_LABEL, "background": 0}],
    ids=["empty", "organs", "method-names", "extremes"],
)
def test_copy_deepcopy_and_pickle_round_trip(mapping: dict[str, int]) -> None:
    m = LabelMapping(mapping)
    copies = [copy.copy(m), copy.deepcopy(m), copy.deepcopy([m])[0]]
    copies += [
        pickle.loads(pickle.dumps(m, protocol=p)) for p in range(pickle.HIGHEST_PROTOCOL + 1)
    ]
    for other in copies:
        assert isinstance(other, LabelMapping)
        assert other == m
        assert other.to_dict() == mapping
        assert LabelMapping.items(other) == list(mapping.items())
        assert hash(other) == hash(m)
