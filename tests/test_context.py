import pytest
import torch

from tinydiffusion.conditioning.spec import ContextSpec
from tinydiffusion.errors import UsageError

SPEC = ContextSpec.classes(["hero", "monster", "item", "spell", "terrain"])


def test_one_hot_and_mixtures_as_in_the_course():
    assert SPEC.parse("hero").tolist() == [1, 0, 0, 0, 0]
    assert SPEC.parse("hero=1,item=0.6").tolist() == pytest.approx([1, 0, 0.6, 0, 0])
    assert SPEC.parse("monster+spell").tolist() == [0, 1, 0, 1, 0]
    assert SPEC.parse(" terrain = 0.5 ").tolist() == [0, 0, 0, 0, 0.5]


def test_none_is_the_null_context():
    assert torch.count_nonzero(SPEC.parse("none")) == 0
    assert torch.count_nonzero(SPEC.parse("")) == 0


def test_unknown_class_lists_the_known_ones():
    with pytest.raises(UsageError, match="'dragon'.*hero, monster, item, spell, terrain"):
        SPEC.parse("dragon")
    with pytest.raises(UsageError, match="weight of 'hero'"):
        SPEC.parse("hero=lots")
    with pytest.raises(UsageError, match="weight"):
        SPEC.parse("hero=nan")


def test_unconditional_model_refuses_class_names():
    with pytest.raises(UsageError, match="unconditional"):
        ContextSpec().parse("hero")


def test_spec_round_trips_and_validates():
    assert ContextSpec.from_dict(SPEC.to_dict()) == SPEC
    assert SPEC.parse_many(["hero", "item"]).shape == (2, 5)
    assert SPEC.one_hot(torch.tensor([4, 0])).tolist()[0] == [0, 0, 0, 0, 1]
    assert SPEC.label_of("item") == 2 and SPEC.label_of("hero+item") is None
    with pytest.raises(UsageError, match="distinct"):
        ContextSpec.classes(["a", "a"])
