"""Label mappings: names <-> label values, the ways to look them up, and JSON."""

from medmask import LabelMapping

mapping = LabelMapping({"liver": 1, "spleen": 2, "kidney_left": 3})

print("By item:", mapping["liver"])
print("By attribute:", mapping.spleen)
print("By call:", mapping("kidney_left"))
print("Inverse of 2:", mapping.inverse(2))
print("Has label 3:", mapping.has_label(3), "| has label 9:", mapping.has_label(9))
print("Items:", mapping.items())
print("Names:", list(mapping), "| count:", len(mapping))

text = mapping.to_json()
print("JSON:", text)
print("Round trip equal:", LabelMapping.from_json(text) == mapping)

try:
    mapping["livr"]
except KeyError as error:
    print("Unknown name:", error)

try:
    LabelMapping({"liver": 1, "spleen": 1})
except ValueError as error:
    print("Duplicate value rejected:", error)

# A label that shares its name with a method is reachable by item, never by attribute.
odd = LabelMapping({"items": 7})
print("Label called 'items':", odd["items"])
try:
    odd.items  # noqa: B018 - the attribute access is what raises
except AttributeError as error:
    print("Attribute access refused:", error)
