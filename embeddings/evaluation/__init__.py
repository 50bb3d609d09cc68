"""How well the search answers judged question sets: the sets, the measures, and the runner
(`judging`) that puts each method through them side by side."""
