//! The exact permutation libstdc++'s `std::sort` produces.
//!
//! `nix-env -q` sorts its rows with `std::sort` and a comparator that only looks at names, so
//! rows whose names tie come out in an order that depends on the algorithm: introsort with a
//! median-of-three pivot, a heapsort fallback past `2 * floor(log2 n)` levels, and a final
//! insertion sort over runs of 16. That order is unspecified by C++ but deterministic for a given
//! input, and scripts that diff `nix-env` output see it; reproducing the algorithm step for step
//! (GCC 12's `stl_algo.h` and `stl_heap.h`, which Nix 2.8 was built with) makes our rows identical.
//!
//! Pure. The comparator must be a strict weak order; with one, every index stays in bounds, as
//! libstdc++'s unguarded loops assume. The loops here also check bounds, so a faulty comparator
//! yields some permutation rather than a panic.

/// Threshold below which libstdc++ leaves ranges to the final insertion sort.
const THRESHOLD: usize = 16;

/// Sorts `items` exactly as `std::sort(items.begin(), items.end(), less)` does.
pub fn cxx_sort<T: Copy>(items: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    let length = items.len();
    if length == 0 {
        return;
    }
    let depth_limit = 2 * floor_log2(length);
    introsort_loop(items, 0, length, depth_limit, &mut less);
    final_insertion_sort(items, 0, length, &mut less);
}

fn floor_log2(value: usize) -> usize {
    (usize::BITS - 1 - value.leading_zeros()) as usize
}

fn introsort_loop<T: Copy>(
    items: &mut [T],
    first: usize,
    mut last: usize,
    mut depth_limit: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    while last - first > THRESHOLD {
        if depth_limit == 0 {
            // `__partial_sort(first, last, last)`: heap-select degenerates to make-heap.
            make_heap(items, first, last, less);
            sort_heap(items, first, last, less);
            return;
        }
        depth_limit -= 1;
        let cut = unguarded_partition_pivot(items, first, last, less);
        introsort_loop(items, cut, last, depth_limit, less);
        last = cut;
    }
}

fn unguarded_partition_pivot<T: Copy>(
    items: &mut [T],
    first: usize,
    last: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) -> usize {
    let middle = first + (last - first) / 2;
    move_median_to_first(items, first, first + 1, middle, last - 1, less);
    unguarded_partition(items, first + 1, last, first, less)
}

fn move_median_to_first<T: Copy>(
    items: &mut [T],
    result: usize,
    a: usize,
    b: usize,
    c: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let chosen = if less(&items[a], &items[b]) {
        if less(&items[b], &items[c]) {
            b
        } else if less(&items[a], &items[c]) {
            c
        } else {
            a
        }
    } else if less(&items[a], &items[c]) {
        a
    } else if less(&items[b], &items[c]) {
        c
    } else {
        b
    };
    items.swap(result, chosen);
}

fn unguarded_partition<T: Copy>(
    items: &mut [T],
    mut first: usize,
    mut last: usize,
    pivot: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) -> usize {
    // The bounds are never reached with a strict weak order (the pivot and the median-of-three
    // act as sentinels, as libstdc++ relies on); they keep the cut inside the range otherwise.
    let (low, high) = (first, last);
    loop {
        while first + 1 < high && less(&items[first], &items[pivot]) {
            first += 1;
        }
        last -= 1;
        while last > low && less(&items[pivot], &items[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        items.swap(first, last);
        first += 1;
    }
}

fn final_insertion_sort<T: Copy>(
    items: &mut [T],
    first: usize,
    last: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    if last - first > THRESHOLD {
        insertion_sort(items, first, first + THRESHOLD, less);
        for position in first + THRESHOLD..last {
            unguarded_linear_insert(items, position, first, less);
        }
    } else {
        insertion_sort(items, first, last, less);
    }
}

fn insertion_sort<T: Copy>(
    items: &mut [T],
    first: usize,
    last: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    if first == last {
        return;
    }
    for position in first + 1..last {
        if less(&items[position], &items[first]) {
            items[first..=position].rotate_right(1);
        } else {
            unguarded_linear_insert(items, position, first, less);
        }
    }
}

/// Moves `items[position]` left past every element it is less than. `floor` only bounds the
/// walk for comparators that are not strict weak orders.
fn unguarded_linear_insert<T: Copy>(
    items: &mut [T],
    mut position: usize,
    floor: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let value = items[position];
    while position > floor && less(&value, &items[position - 1]) {
        items[position] = items[position - 1];
        position -= 1;
    }
    items[position] = value;
}

fn make_heap<T: Copy>(
    items: &mut [T],
    first: usize,
    last: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let length = last - first;
    if length < 2 {
        return;
    }
    let mut parent = (length - 2) / 2;
    loop {
        let value = items[first + parent];
        adjust_heap(items, first, parent, length, value, less);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

fn sort_heap<T: Copy>(
    items: &mut [T],
    first: usize,
    mut last: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    while last - first > 1 {
        last -= 1;
        // `__pop_heap(first, last, last)`.
        let value = items[last];
        items[last] = items[first];
        adjust_heap(items, first, 0, last - first, value, less);
    }
}

fn adjust_heap<T: Copy>(
    items: &mut [T],
    first: usize,
    mut hole: usize,
    length: usize,
    value: T,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let top = hole;
    let mut second_child = hole;
    while second_child < length.saturating_sub(1) / 2 {
        second_child = 2 * (second_child + 1);
        if less(
            &items[first + second_child],
            &items[first + second_child - 1],
        ) {
            second_child -= 1;
        }
        items[first + hole] = items[first + second_child];
        hole = second_child;
    }
    if length.is_multiple_of(2) && second_child == (length - 2) / 2 {
        second_child = 2 * (second_child + 1);
        items[first + hole] = items[first + second_child - 1];
        hole = second_child - 1;
    }
    // `__push_heap(first, hole, top, value)`.
    let mut parent = hole.saturating_sub(1) / 2;
    while hole > top && less(&items[first + parent], &value) {
        items[first + hole] = items[first + parent];
        hole = parent;
        parent = hole.saturating_sub(1) / 2;
    }
    items[first + hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorts_like_a_sort(mut values in proptest::collection::vec(0u8..20, 0..300)) {
            let mut expected = values.clone();
            expected.sort_unstable();
            cxx_sort(&mut values, |a, b| a < b);
            prop_assert_eq!(values, expected);
        }

        #[test]
        fn keys_are_sorted_and_the_result_is_a_permutation(
            keys in proptest::collection::vec(0u8..6, 0..200)
        ) {
            // Sort indices by a key with many ties: the output must be ordered by key and
            // contain every index once, whatever order the ties end up in.
            let mut indices: Vec<usize> = (0..keys.len()).collect();
            cxx_sort(&mut indices, |&a, &b| keys[a] < keys[b]);
            prop_assert!(indices.windows(2).all(|pair| keys[pair[0]] <= keys[pair[1]]));
            let mut seen = indices.clone();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..keys.len()).collect::<Vec<_>>());
        }

        #[test]
        fn inconsistent_comparators_do_not_panic(
            values in proptest::collection::vec(any::<u8>(), 0..200), salt in any::<u8>()
        ) {
            let mut values = values;
            let mut calls = 0u32;
            cxx_sort(&mut values, |a, b| {
                calls = calls.wrapping_add(1);
                (a ^ salt ^ (calls as u8)) < *b
            });
        }
    }

    /// `std::sort` of `0..n` with the comparator `a % m < b % m` (a key with many ties), as
    /// printed by a C++17 program built with g++ 12.2.
    #[rstest::rstest]
    #[case(40, 3, &[0, 21, 18, 24, 15, 27, 12, 30, 9, 33, 6, 36, 3, 39, 31, 34, 28, 37, 25, 22, 1, 19, 16, 4, 13, 7, 10, 2, 20, 38, 5, 35, 8, 32, 11, 29, 14, 26, 17, 23])]
    #[case(200, 5, &[105, 150, 145, 30, 140, 35, 130, 125, 40, 120, 115, 45, 110, 135, 50, 100, 95, 55, 90, 85, 60, 80, 75, 65, 70, 175, 0, 195, 5, 190, 185, 10, 180, 25, 15, 170, 165, 20, 155, 160, 96, 151, 196, 71, 146, 76, 191, 81, 141, 86, 186, 156, 91, 181, 126, 136, 101, 176, 106, 1, 171, 111, 131, 116, 166, 121, 161, 16, 31, 36, 26, 41, 21, 46, 51, 11, 56, 61, 6, 66, 197, 167, 47, 107, 17, 2, 112, 162, 72, 42, 117, 157, 22, 77, 122, 152, 37, 127, 147, 27, 132, 142, 32, 137, 67, 52, 87, 182, 62, 57, 92, 177, 12, 7, 97, 187, 82, 172, 102, 192, 28, 193, 143, 8, 198, 188, 148, 183, 153, 168, 23, 178, 158, 13, 173, 163, 3, 18, 68, 43, 53, 98, 93, 103, 48, 108, 88, 58, 113, 83, 118, 123, 63, 138, 33, 133, 73, 128, 78, 38, 64, 139, 94, 4, 179, 54, 69, 9, 89, 199, 79, 189, 184, 74, 84, 194, 59, 159, 29, 134, 144, 34, 129, 149, 24, 124, 154, 39, 119, 174, 114, 19, 44, 164, 109, 104, 169, 14, 49, 99])]
    fn ties_follow_libstdcxx(
        #[case] length: usize,
        #[case] modulus: usize,
        #[case] expected: &[usize],
    ) {
        let mut indices: Vec<usize> = (0..length).collect();
        cxx_sort(&mut indices, |a, b| a % modulus < b % modulus);
        assert_eq!(indices, expected);
    }
}
