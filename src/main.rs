fn main() {
    println!("ferrosan");
}
