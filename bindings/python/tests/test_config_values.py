"""A non-finite config value is a ValueError naming the field (JSON, which carries configs to the
library, has no NaN: the library used to report 'fields_json is not valid JSON')."""
import pytest

import dpo
from conftest import TINY


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_config_values_name_the_field(value):
    with pytest.raises(ValueError, match="beta = .* is not a finite number"):
        dpo.DPOConfig(beta=value)
    args = dpo.DPOConfig()
    with pytest.raises(ValueError, match="learning_rate = .* is not a finite number"):
        args.learning_rate = value
    assert args.learning_rate == dpo.DPOConfig().learning_rate  # unchanged
    with pytest.raises(ValueError, match="rms_norm_eps = .* is not a finite number"):
        dpo.Model.from_config(dict(TINY, rms_norm_eps=value))
