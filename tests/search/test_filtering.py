from tsr_cli.agent.trajectory import Trajectory, Turn
from tsr_cli.policies.base import Completion
from tsr_cli.search.filtering import filter_groups, group_return_std


def traj(group, ret):
    turn = Turn((), Completion([], [], ""), (), (), (), (), ret, True)
    return Trajectory("x", seed=group, group=group, turns=[turn])


def test_keeps_top_fraction_by_std():
    batch = [traj(0, 1.0), traj(0, 1.0),      # std 0
             traj(1, 0.0), traj(1, 10.0),     # std 5
             traj(2, 0.0), traj(2, 2.0),      # std 1
             traj(3, -3.0), traj(3, 3.0)]     # std 3
    assert group_return_std(batch) == {0: 0.0, 1: 5.0, 2: 1.0, 3: 3.0}
    assert {t.group for t in filter_groups(batch, 0.25)} == {1}
    assert {t.group for t in filter_groups(batch, 0.5)} == {1, 3}
    assert len(filter_groups(batch, 0.5)) == 4


def test_keep_one_is_off_and_at_least_one_group_survives():
    batch = [traj(0, 1.0), traj(0, 2.0), traj(1, 0.0), traj(1, 0.0)]
    assert filter_groups(batch, 1.0) == batch
    assert {t.group for t in filter_groups(batch, 0.01)} == {0}


def test_ties_keep_the_earlier_group():
    batch = [traj(0, 0.0), traj(0, 0.0), traj(1, 0.0), traj(1, 0.0)]
    assert {t.group for t in filter_groups(batch, 0.5)} == {0}
