import numpy as np
import pytest

from kmot.sparsity import ConstantSparsity, PolynomialDecay, ScaledSparsity, ScheduleError


def _at(schedule, step):
    update, sparsity = schedule(step)
    return bool(np.asarray(update)), round(float(np.asarray(sparsity)), 4)


def test_polynomial_decay_curve_and_updates():
    s = PolynomialDecay(0.0, 0.8, begin_step=10, end_step=110, frequency=25)
    assert _at(s, 9) == (False, 0.0)
    assert _at(s, 10) == (True, 0.0)
    assert _at(s, 35)[0] and not _at(s, 36)[0]
    assert _at(s, 60) == (True, round(0.8 * (1 - 0.5**3), 4))
    assert _at(s, 110) == (True, 0.8)  # the end step always updates
    assert _at(s, 135) == (False, 0.8)  # never after the end


def test_constant_sparsity_without_end():
    s = ConstantSparsity(0.5, begin_step=0, frequency=100)
    assert _at(s, 0) == (True, 0.5) and _at(s, 100_000) == (True, 0.5)
    assert not _at(s, 150)[0]
    assert s.final_sparsity == 0.5


def test_scaled_sparsity_keeps_timing():
    base = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    scaled = ScaledSparsity(base, 0.5)
    assert _at(scaled, 100) == (True, 0.4) and scaled.final_sparsity == pytest.approx(0.4)
    with pytest.raises(ScheduleError, match=r"factor.*Received: factor=2"):
        ScaledSparsity(base, 2)


@pytest.mark.parametrize("make, message", [
    (lambda: ConstantSparsity(1.0), r"`target_sparsity` must be a number in \[0, 1\).*Received: target_sparsity=1.0"),
    (lambda: ConstantSparsity(-0.1), r"Received: target_sparsity=-0.1"),
    (lambda: ConstantSparsity("0.5"), r"Received: target_sparsity='0.5'"),
    (lambda: ConstantSparsity(0.5, begin_step=-3), r"`begin_step` must be an int >= 0.*Received: begin_step=-3"),
    (lambda: ConstantSparsity(0.5, frequency=0), r"`frequency` must be an int >= 1.*Received: frequency=0"),
    (lambda: PolynomialDecay(0.0, 0.8, begin_step=100, end_step=50), r"`end_step` must be >= `begin_step`.*begin_step=100, end_step=50"),
    (lambda: PolynomialDecay(0.0, 0.8, begin_step=0, end_step=-1), r"the decay needs an end"),
    (lambda: PolynomialDecay(0.0, 1.2, begin_step=0, end_step=10), r"Received: final_sparsity=1.2"),
    (lambda: PolynomialDecay(0.0, 0.8, begin_step=0, end_step=10, power=0), r"`power` must be a number > 0"),
    (lambda: PolynomialDecay(0.0, 0.8, begin_step=0.5, end_step=10), r"Received: begin_step=0.5"),
])
def test_validation_errors_name_the_value(make, message):
    with pytest.raises(ScheduleError, match=message):
        make()


def test_schedules_round_trip_config():
    import keras

    for s in (ConstantSparsity(0.3, 5, 50, 7), PolynomialDecay(0.1, 0.9, 0, 99, power=2, frequency=3),
              ScaledSparsity(PolynomialDecay(0.0, 0.5, 0, 10), 1.5)):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
        assert type(again) is type(s) and again.get_config() == s.get_config()


def test_a_ramp_shorter_than_the_update_frequency_is_said_to_be_one_jump():
    import warnings

    # 25 steps of ramp, masks every 100: all of the sparsity would come at step 25
    with pytest.warns(UserWarning, match=r"frequency=100 is not less than end_step - "
                                         r"begin_step = 25.*jumps from 0 to 0.5 at once.*"
                                         r"frequency=2"):
        PolynomialDecay(0.0, 0.5, begin_step=0, end_step=25)
    with pytest.warns(UserWarning, match=r"update only at steps 0 and 100"):
        PolynomialDecay(0.0, 0.5, begin_step=0, end_step=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PolynomialDecay(0.0, 0.5, begin_step=0, end_step=25, frequency=5)
        PolynomialDecay(0.5, 0.5, begin_step=0, end_step=25)  # nothing to ramp
