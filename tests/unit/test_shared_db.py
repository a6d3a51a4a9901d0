"""Several workers of one service may open the same read model at the same moment."""
import threading

from services.budsjett.readmodel import ReadModel


def test_workers_starting_together_on_one_new_database_all_start(tmp_path):
    for round_number in range(5):
        url = f"sqlite:///{tmp_path / f'round{round_number}' / 'budsjett.db'}"
        barrier = threading.Barrier(6)
        errors = []

        def open_model():
            barrier.wait()
            try:
                ReadModel(url).close()
            except Exception as error:  # the race showed as OperationalError: table already exists
                errors.append(error)

        threads = [threading.Thread(target=open_model) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert [repr(e) for e in errors] == []
