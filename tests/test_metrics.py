"""AA, BWT, forgetting and FWT against hand-computed matrices."""

import pytest

from olora.core.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer, summarize


def test_two_by_two():
    m = [[90.0], [70.0, 80.0]]
    assert average_accuracy(m) == pytest.approx(75.0)
    assert backward_transfer(m) == pytest.approx(-20.0)  # 70 - 90
    assert forgetting(m) == pytest.approx(20.0)
    # FWT (Lopez-Paz & Ranzato): task 1's score before training it (65) minus the untrained model's (60)
    assert forward_transfer([None, 65.0], [50.0, 60.0]) == pytest.approx(5.0)


def test_three_by_three():
    m = [[80.0], [85.0, 60.0], [75.0, 70.0, 90.0]]
    assert average_accuracy(m) == pytest.approx((75 + 70 + 90) / 3)
    # BWT: ((75-80) + (70-60)) / 2 = 2.5
    assert backward_transfer(m) == pytest.approx(2.5)
    # forgetting: task0 max(80, 85) - 75 = 10; task1 max(60) - 70 = -10 -> mean 0
    assert forgetting(m) == pytest.approx(0.0)
    # FWT: ((55 - 50) + (80 - 70)) / 2 = 7.5; the diagonal (60, 90) is not what FWT measures
    assert forward_transfer([None, 55.0, 80.0], [0.0, 50.0, 70.0]) == pytest.approx(7.5)
    with pytest.raises(ValueError, match="before it was trained"):
        forward_transfer([None, None, 80.0], [0.0, 50.0, 70.0])


def test_square_matrix_ignores_entries_above_diagonal():
    lower = [[80.0], [85.0, 60.0]]
    square = [[80.0, 10.0], [85.0, 60.0]]
    assert summarize(lower) == summarize(square)


def test_single_task_has_no_transfer():
    assert summarize([[55.0]]) == {"aa": 55.0, "bwt": None, "forgetting": None}


def test_malformed_matrix_is_rejected():
    with pytest.raises(ValueError, match="row 1"):
        average_accuracy([[1.0], [2.0]])
    with pytest.raises(ValueError, match="empty"):
        backward_transfer([])


def test_mean_std_and_paired_difference():
    from olora.core.metrics import mean_std, paired_difference, t95

    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_std([4.0]) == (4.0, None)
    # differences 2, 4, 6: mean 4, std 2, half-width t95(2) * 2 / sqrt(3)
    diff, half = paired_difference([12.0, 14.0, 16.0], [10.0, 10.0, 10.0])
    assert diff == pytest.approx(4.0) and half == pytest.approx(4.303 * 2 / 3**0.5)
    assert paired_difference([1.0], [0.5]) == (0.5, None)
    assert t95(30) == pytest.approx(2.042, rel=0.01) and t95(1000) == pytest.approx(1.962, rel=0.01)
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference([1.0], [])


@pytest.mark.parametrize("std", [0.0, 3.0, 7.9, 11.2, 40.0])
def test_seeds_needed_is_the_fewest_whose_interval_is_narrow_enough(std):
    from olora.core.metrics import seeds_needed, t95

    n = seeds_needed(std, 4.0)
    assert t95(n - 1) * std / n**0.5 <= 4.0  # enough ...
    assert n == 2 or t95(n - 2) * std / (n - 1) ** 0.5 > 4.0  # ... and one fewer is not
    assert seeds_needed(std, 2.0) >= n  # a narrower target never needs fewer seeds


def test_seeds_needed_stops_at_its_cap_and_refuses_a_zero_target():
    from olora.core.metrics import seeds_needed

    assert seeds_needed(1e6, 1.0, most=50) == 50
    with pytest.raises(ValueError, match="half_width must be positive"):
        seeds_needed(1.0, 0.0)


def test_a_task_learned_no_better_than_chance_is_flagged():
    from olora.core.metrics import chance_band, not_learned

    # 4 labels, 200 test examples: chance 25 %, standard error √(.25·.75/200) = 3.06 points → band 31.1
    assert chance_band(4, 200) == pytest.approx(25 + 2 * 100 * (0.25 * 0.75 / 200) ** 0.5)
    matrix = [[31.0], [80.0, 90.0], [70.0, 85.0, 12.0]]
    assert not_learned(matrix, [4, 2, 14], [200, 200, 210]) == [0]  # 90 > 57.1; 12 > 7.1 + 3.5 = 10.6
    assert not_learned(matrix, [4, None, 0], [200, 200, 210]) == [0]  # free-form tasks are never flagged
    assert not_learned([[32.0]], [4], [200]) == []


def test_a_run_says_which_tasks_it_did_not_learn(tiny_dirs, tmp_path, capsys):
    from conftest import run_args
    from olora.cli import main

    assert main(run_args(tiny_dirs["llama"], tmp_path / "run")) == 0  # a random tiny model learns nothing
    out = capsys.readouterr().out
    assert "NOT LEARNED (2 of 2)" in out and "chance 50" in out
    assert main(["show", str(tmp_path / "run")]) == 0 and "NOT LEARNED" in capsys.readouterr().out
